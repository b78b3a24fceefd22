"""moto's standalone S3 server, with AWS's checks of presigned URLs, as a process for the tests.

Run as ``python s3_server.py PORT SECRET_KEY``. It serves moto's own application (what the
``moto_server`` command serves) with one addition: moto 5 accepts any presigned URL, however
old or altered, where AWS checks it. So a request that carries SigV4 query authentication
(``X-Amz-Signature``) passes the two checks AWS makes before moto sees it:

* the signature, recomputed from the method, path, query (less the signature), the signed
  headers and ``UNSIGNED-PAYLOAD`` with ``SECRET_KEY`` (every test client uses that key):
  a changed key, bucket or expiry is ``403 SignatureDoesNotMatch``;
* the expiry: at or after ``X-Amz-Date + X-Amz-Expires`` the answer is ``403 AccessDenied``
  ("Request has expired"), as AWS says it.

Everything else (buckets, objects, multipart uploads, ranged GETs) is moto's unchanged.
"""

from __future__ import annotations

import hashlib
import hmac
import sys
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, quote

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def _error(start_response: StartResponse, code: str, message: str) -> list[bytes]:
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
        f"<Message>{message}</Message></Error>"
    ).encode()
    start_response("403 Forbidden", [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))])
    return [body]


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def presign_problem(environ: dict[str, Any], secret_key: str, now: datetime) -> tuple[str, str] | None:
    """Why AWS would refuse this SigV4-presigned request (code, message), or None."""
    raw_query = environ.get("QUERY_STRING", "")
    pairs = parse_qsl(raw_query, keep_blank_values=True)
    params = dict(pairs)
    if params.get("X-Amz-Algorithm") != "AWS4-HMAC-SHA256":
        return "AuthorizationQueryParametersError", "only AWS4-HMAC-SHA256 presigned URLs are checked"
    credential = params.get("X-Amz-Credential", "").split("/")
    if len(credential) != 5:
        return "AuthorizationQueryParametersError", "bad X-Amz-Credential"
    _, day, region, service, _ = credential
    stamp = params.get("X-Amz-Date", "")
    headers = params.get("X-Amz-SignedHeaders", "").split(";")
    canonical_query = "&".join(
        f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(pairs) if k != "X-Amz-Signature"
    )
    canonical_headers = ""
    for name in headers:
        if name == "host":
            value = environ.get("HTTP_HOST", "")
        else:
            value = environ.get("HTTP_" + name.upper().replace("-", "_"), "")
        canonical_headers += f"{name}:{value.strip()}\n"
    path = environ.get("RAW_URI", environ.get("PATH_INFO", "/")).split("?", 1)[0]
    canonical = "\n".join(
        [
            environ["REQUEST_METHOD"],
            path,
            canonical_query,
            canonical_headers,
            ";".join(headers),
            "UNSIGNED-PAYLOAD",
        ]
    )
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(_hmac(_hmac(_hmac(f"AWS4{secret_key}".encode(), day), region), service), "aws4_request")
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, params.get("X-Amz-Signature", "")):
        return (
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided.",
        )
    try:
        signed_at = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        expires = int(params.get("X-Amz-Expires", ""))
    except ValueError:
        return "AuthorizationQueryParametersError", "bad X-Amz-Date or X-Amz-Expires"
    if now.timestamp() >= signed_at.timestamp() + expires:
        return "AccessDenied", "Request has expired"
    return None


def checked(app: WsgiApp, secret_key: str) -> WsgiApp:
    """``app`` behind AWS's presigned-URL checks (see the module docstring)."""

    def wrapper(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if "X-Amz-Signature=" in environ.get("QUERY_STRING", ""):
            problem = presign_problem(environ, secret_key, datetime.now(UTC))
            if problem is not None:
                sys.stderr.write(f"presigned request refused: {problem[0]}: {environ.get('PATH_INFO')}\n")
                return _error(start_response, *problem)
        return app(environ, start_response)

    return wrapper


def main() -> None:
    port, secret_key = int(sys.argv[1]), sys.argv[2]
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(
        "127.0.0.1",
        port,
        checked(app, secret_key),  # type: ignore[arg-type]
        threaded=True,
        request_handler=MotoRequestHandler,
    )


if __name__ == "__main__":
    main()
