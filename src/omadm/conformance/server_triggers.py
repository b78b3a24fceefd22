"""Triggers: how the server runner makes the DM server under test act, or reads what it did.

A DM server acts on an operator's request (queue an install, read the inventory); the
conformance runner plays a device and cannot press that button itself. A trigger file (TOML)
names, per trigger, a REST call or a shell command that does it::

    [vars]
    api = "http://127.0.0.1:8080/api/v1"
    token = "{env:OMADM_TOKEN}"

    [triggers.install]
    method = "POST"
    url = "{api}/jobs"
    headers = { Authorization = "Bearer {token}" }
    json = { device_id = "{device_id}", kind = "install", artifact_id = "{artifact_id}" }
    save = { job_id = "id" }           # response JSON field -> a placeholder for later triggers

    [triggers.job]
    method = "GET"
    url = "{api}/jobs/{job_id}"
    headers = { Authorization = "Bearer {token}" }
    returns = { state = "state", result_code = "result_code" }

    [triggers.refresh]
    command = "my-server-cli read-inventory {device_id}"

Placeholders ``{name}`` are filled from the runner's values (``device_id``, ``server_url``...),
``[vars]``, ``--set NAME=VALUE``, what earlier triggers saved, and ``{env:NAME}`` from the
environment. ``returns``/``save`` take dotted paths into the JSON answer (``items.0.state``); a
path ending in ``[]`` over a list (``[].ident``) collects that field of every element.

Without a trigger file (or for a trigger the file does not name) the runner asks the operator
on the terminal and waits; a query then asks for each value it needs.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import tomllib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

__all__ = [
    "KNOWN_TRIGGERS",
    "Trigger",
    "TriggerError",
    "TriggerRunner",
    "TriggerSpec",
    "load_triggers",
]


@dataclass(frozen=True)
class TriggerSpec:
    """A trigger the cases use: what it must make the server do, and what a query returns."""

    meaning: str
    returns: tuple[str, ...] = ()


#: Every trigger a case may fire, with what the operator is asked when there is no file.
KNOWN_TRIGGERS: dict[str, TriggerSpec] = {
    "install": TriggerSpec(
        "queue an install by URL (DownloadInstall) of the test package for device {device_id}"
    ),
    "install_inactive": TriggerSpec(
        "queue an install without activation (DownloadInstallInactive) of the test package for {device_id}"
    ),
    "download": TriggerSpec("queue a Download (no install) of the test package for device {device_id}"),
    "update": TriggerSpec(
        "queue an update of component {component_id} on device {device_id} with the test package"
    ),
    "activate": TriggerSpec("queue an Activate of component {component_id} on device {device_id}"),
    "deactivate": TriggerSpec("queue a Deactivate of component {component_id} on device {device_id}"),
    "remove": TriggerSpec("queue a Remove of component {component_id} on device {device_id}"),
    "refresh_inventory": TriggerSpec("ask the server to read the SCOMO inventory of device {device_id}"),
    "job": TriggerSpec(
        "look up the last operation queued for device {device_id}", returns=("state", "result_code")
    ),
    "inventory": TriggerSpec(
        "look up the components the server lists for device {device_id}",
        returns=("components", "kinds"),
    ),
}

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*|env:[A-Za-z_][A-Za-z0-9_]*)\}")
_METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE"}


class TriggerError(ValueError):
    """A trigger file or a trigger's run is unusable; the message names the trigger and why."""


@dataclass(frozen=True)
class Trigger:
    """One entry of ``[triggers]``: a REST call or a shell command."""

    name: str
    method: str = ""
    url: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    json_body: Any = None
    command: str = ""
    save: dict[str, str] = field(default_factory=dict)
    returns: dict[str, str] = field(default_factory=dict)
    #: Seconds to wait after firing (a server that acts asynchronously).
    settle: float = 0.0


def _table(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TriggerError(f"{where} must be a table")
    return value


def _strings(value: object, where: str) -> dict[str, str]:
    table = _table(value, where)
    for key, item in table.items():
        if not isinstance(item, str):
            raise TriggerError(f"{where}.{key} must be a string, not {item!r}")
    return dict(table)


def _trigger(name: str, data: dict[str, Any], where: str) -> Trigger:
    unknown = sorted(set(data) - {"method", "url", "headers", "json", "command", "save", "returns", "settle"})
    if unknown:
        raise TriggerError(f"{where}: unknown keys {', '.join(unknown)}")
    command = data.get("command", "")
    url = data.get("url", "")
    if not isinstance(command, str) or not isinstance(url, str):
        raise TriggerError(f"{where}: url and command must be strings")
    if bool(command) == bool(url):
        raise TriggerError(f"{where}: give either url (a REST call) or command (a shell command)")
    method = str(data.get("method", "POST" if "json" in data else "GET")).upper()
    if url and method not in _METHODS:
        raise TriggerError(f"{where}: method must be one of {', '.join(sorted(_METHODS))}, not {method!r}")
    if url and not url.startswith(("http://", "https://", "{")):
        raise TriggerError(f"{where}: url must start with http:// or https://, not {url!r}")
    settle = data.get("settle", 0.0)
    if not isinstance(settle, int | float) or settle < 0:
        raise TriggerError(f"{where}: settle must be a number of seconds >= 0, not {settle!r}")
    return Trigger(
        name=name,
        method=method if url else "",
        url=url,
        headers=_strings(data.get("headers", {}), f"{where}.headers"),
        json_body=data.get("json"),
        command=command,
        save=_strings(data.get("save", {}), f"{where}.save"),
        returns=_strings(data.get("returns", {}), f"{where}.returns"),
        settle=float(settle),
    )


def load_triggers(path: Path) -> tuple[dict[str, Trigger], dict[str, str]]:
    """The triggers and ``[vars]`` of a trigger file; raises TriggerError naming the problem."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TriggerError(f"{path}: cannot read the trigger file: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise TriggerError(f"{path}: not valid TOML: {exc}") from exc
    unknown = sorted(set(data) - {"vars", "triggers"})
    if unknown:
        raise TriggerError(f"{path}: unknown tables {', '.join(unknown)} (expected [vars] and [triggers])")
    variables = _strings(data.get("vars", {}), f"{path}: [vars]")
    triggers: dict[str, Trigger] = {}
    for name, entry in _table(data.get("triggers", {}), f"{path}: [triggers]").items():
        if name not in KNOWN_TRIGGERS:
            known = ", ".join(sorted(KNOWN_TRIGGERS))
            raise TriggerError(f"{path}: unknown trigger {name!r} (known: {known})")
        triggers[name] = _trigger(name, _table(entry, f"{path}: triggers.{name}"), f"{path}: triggers.{name}")
    return triggers, variables


def fill(template: str, values: dict[str, str], where: str, depth: int = 0) -> str:
    """``template`` with every placeholder replaced; a missing one is an error naming it.

    A value may itself hold placeholders (``token = "{env:OMADM_TOKEN}"`` in ``[vars]``):
    they are filled too, up to a few levels (a value naming itself is an error, not a loop).
    """
    if depth > 5:
        raise TriggerError(f"{where}: placeholders nest more than 5 deep (a value refers to itself?)")

    def one(match: re.Match[str]) -> str:
        key = match.group(1)
        if key.startswith("env:"):
            name = key[4:]
            if name not in os.environ:
                raise TriggerError(f"{where}: the environment variable {name} is not set")
            return os.environ[name]
        if key not in values:
            raise TriggerError(
                f"{where}: no value for the placeholder {{{key}}} "
                f"(give it with --set {key}=VALUE or in [vars])"
            )
        value = values[key]
        return fill(value, values, where, depth + 1) if _PLACEHOLDER.search(value) else value

    return _PLACEHOLDER.sub(one, template)


def _fill_json(value: Any, values: dict[str, str], where: str) -> Any:
    if isinstance(value, str):
        return fill(value, values, where)
    if isinstance(value, list):
        return [_fill_json(v, values, where) for v in value]
    if isinstance(value, dict):
        return {k: _fill_json(v, values, where) for k, v in value.items()}
    return value


def extract(document: Any, path: str) -> Any:
    """The value at a dotted ``path`` of a JSON document (``a.0.b``; ``[].x`` maps over a list)."""
    if path in ("", "."):
        return document
    head, _, rest = path.partition(".")
    if head == "[]":
        if not isinstance(document, list):
            raise KeyError(f"{path}: not a list")
        return [extract(item, rest) for item in document]
    if isinstance(document, list):
        return extract(document[int(head)], rest)
    if isinstance(document, dict):
        return extract(document[head], rest)
    raise KeyError(f"{path}: cannot descend into {type(document).__name__}")


Asker = Callable[[str], Awaitable[str]]


async def _ask_terminal(prompt: str) -> str:
    return await asyncio.to_thread(input, prompt)


class TriggerRunner:
    """Fires triggers: the file's REST call or command, else a question to the operator."""

    def __init__(
        self,
        triggers: dict[str, Trigger] | None = None,
        values: dict[str, str] | None = None,
        *,
        ask: Asker = _ask_terminal,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.triggers = triggers or {}
        #: The HTTP transport of REST triggers (tests pass ``httpx.MockTransport``).
        self.transport = transport
        self.values: dict[str, str] = dict(values or {})
        self.ask = ask
        self.timeout = timeout
        #: What each fire did, in words, for the case's exchanges.
        self.log: list[str] = []

    def has(self, name: str) -> bool:
        return name in self.triggers

    async def fire(self, name: str, **extra: str) -> dict[str, Any]:
        """Run trigger ``name``; returns the values it ``returns`` (a query) or ``{}``."""
        spec = KNOWN_TRIGGERS[name]
        values = {**self.values, **extra}
        trigger = self.triggers.get(name)
        if trigger is None:
            return await self._operator(name, spec, values)
        if trigger.command:
            result = await self._command(trigger, values)
        else:
            result = await self._rest(trigger, values)
        if trigger.settle:
            await asyncio.sleep(trigger.settle)
        return result

    async def _operator(self, name: str, spec: TriggerSpec, values: dict[str, str]) -> dict[str, Any]:
        try:
            meaning = spec.meaning.format(**values)
        except KeyError:
            meaning = spec.meaning
        self.log.append(f"asked the operator to {meaning}")
        if not spec.returns:
            await self.ask(f"\n[trigger {name}] Please {meaning} on the server, then press Enter: ")
            return {}
        out: dict[str, Any] = {}
        for key in spec.returns:
            answer = await self.ask(f"\n[trigger {name}] {meaning}: the {key.replace('_', ' ')}? ")
            if key in ("components", "kinds"):
                out[key] = [part.strip() for part in answer.split(",") if part.strip()]
            else:
                out[key] = answer.strip()
        return out

    async def _command(self, trigger: Trigger, values: dict[str, str]) -> dict[str, Any]:
        where = f"trigger {trigger.name}"
        line = fill(trigger.command, {k: shlex.quote(v) for k, v in values.items()}, where)
        process = await asyncio.create_subprocess_shell(
            line, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        try:
            out, err = await asyncio.wait_for(process.communicate(), self.timeout)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise TriggerError(f"{where}: '{line}' did not finish within {self.timeout:g} s") from None
        self.log.append(f"ran {line!r}: exit {process.returncode}")
        if process.returncode != 0:
            raise TriggerError(
                f"{where}: '{line}' exited with {process.returncode}: "
                f"{err.decode(errors='replace').strip()[:500]}"
            )
        text = out.decode(errors="replace")
        if not (trigger.save or trigger.returns):
            return {}
        try:
            document = json.loads(text)
        except ValueError:
            raise TriggerError(f"{where}: save/returns need JSON on stdout; got {text[:200]!r}") from None
        return self._take(trigger, document)

    async def _rest(self, trigger: Trigger, values: dict[str, str]) -> dict[str, Any]:
        where = f"trigger {trigger.name}"
        url = fill(trigger.url, values, where)
        headers = {k: fill(v, values, where) for k, v in trigger.headers.items()}
        body = _fill_json(trigger.json_body, values, where) if trigger.json_body is not None else None
        try:
            async with httpx.AsyncClient(timeout=self.timeout, transport=self.transport) as client:
                response = await client.request(trigger.method, url, headers=headers, json=body)
        except httpx.HTTPError as exc:
            raise TriggerError(f"{where}: {trigger.method} {url} failed: {exc}") from None
        self.log.append(f"{trigger.method} {url}: HTTP {response.status_code}")
        if response.status_code >= 300:
            raise TriggerError(
                f"{where}: {trigger.method} {url} answered HTTP {response.status_code}: {response.text[:500]}"
            )
        if not (trigger.save or trigger.returns):
            return {}
        try:
            document = response.json()
        except ValueError:
            raise TriggerError(f"{where}: {url} did not answer JSON: {response.text[:200]!r}") from None
        return self._take(trigger, document)

    def _take(self, trigger: Trigger, document: Any) -> dict[str, Any]:
        where = f"trigger {trigger.name}"
        for name, path in trigger.save.items():
            try:
                self.values[name] = str(extract(document, path))
            except (KeyError, IndexError, ValueError) as exc:
                raise TriggerError(f"{where}: save.{name}: no {path!r} in the answer ({exc})") from None
        out: dict[str, Any] = {}
        for name, path in trigger.returns.items():
            try:
                out[name] = extract(document, path)
            except (KeyError, IndexError, ValueError) as exc:
                raise TriggerError(f"{where}: returns.{name}: no {path!r} in the answer ({exc})") from None
        return out
