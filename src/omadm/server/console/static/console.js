// omadm console: the only script. Two jobs, both optional (every page works without it):
// 1. A page whose <body data-refresh="N"> is set (a running campaign) reloads its <main>
//    every N seconds, in place, until the fetched page no longer asks for it.
// 2. A form, or the submit button pressed, with data-confirm="question" asks before the form
//    is sent (the button's question wins: "Preview" needs none, "Create and start" does).
"use strict";

(function () {
  function schedule() {
    var seconds = Number(document.body.dataset.refresh || 0);
    if (!seconds) {
      return;
    }
    window.setTimeout(reload, seconds * 1000);
  }

  function reload() {
    fetch(window.location.href, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) {
        if (response.redirected || !response.ok) {
          window.location.reload(); // logged out, or an error: show the real page
          return null;
        }
        return response.text();
      })
      .then(function (html) {
        if (html === null) {
          return;
        }
        var fresh = new DOMParser().parseFromString(html, "text/html");
        var main = fresh.querySelector("main");
        if (main) {
          document.querySelector("main").replaceWith(main);
        }
        document.body.dataset.refresh = fresh.body.dataset.refresh || "";
        schedule();
      })
      .catch(schedule); // the server is away for a moment: try again later
  }

  document.addEventListener("submit", function (event) {
    var button = event.submitter;
    var question = button && button.dataset.confirm ? button.dataset.confirm : "";
    if (!question && event.target.dataset) {
      question = event.target.dataset.confirm || "";
    }
    if (question && !window.confirm(question)) {
      event.preventDefault();
    }
  });

  schedule();
})();
