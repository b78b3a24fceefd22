"""MO-CLI-*: the standard management objects on the device, checked against their DDF.

The DDF is omadm's own declaration of DevInfo, DevDetail and DMAcc (:mod:`omadm.mo`, written
from OMA-TS-DM_StdObj and the digest §7.8). For each object the same seven rules are checked,
each its own case so that a report says which one a device breaks:

* OCC: every node the DDF requires (occurrence One / OneOrN) is there;
* STRUCT: an interior node has no child the DDF does not declare (except open nodes, Ext);
* FMT: each readable leaf's ``?prop=Format`` is the DDF's Format;
* TYPE: each readable leaf's ``?prop=Type`` is the DDF's MIME type;
* VAL: each readable leaf's value is valid for its Format (and its enumerated values);
* ACC-GET: a leaf the DDF gives no Get (a secret) is never returned;
* ACC-REP: a leaf the DDF gives no Replace refuses one (sent with its current value, so a
  device that wrongly accepts it is not harmed).

DMAcc is checked on the account of the runner's ServerID (other servers' accounts may be
hidden from it by their ACL, as they should be).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from omadm.mo import DEVDETAIL, DEVINFO, DMACC, Access, MODef, NodeDef
from omadm.protocol.messages import Results, Status

from .. import ics
from ..device import DeviceContext
from ..device_session import DeviceSession
from ..device_steps import code_of, replace
from ..model import Inconclusive, Role, case, check

STD = "oma-dm-1.2.md §7.8"
PROPS = ics.declare("properties", "the client answers Get and Replace with ?prop=")


@dataclass(frozen=True)
class Found:
    """A node of the device's tree and the DDF node it follows (None: the DDF does not declare it)."""

    path: str
    definition: NodeDef | None


async def _root(ctx: DeviceContext, session: DeviceSession, mo: MODef) -> str:
    """The path of the MO instance to check (DMAcc: the runner's account)."""
    if mo is not DMACC:
        return mo.default_path
    status, results = await session.get(mo.default_path)
    check(code_of(status) == 200, f"Get {mo.default_path} 200", code_of(status))
    names = [n for n in str(_value(results) or "").split("/") if n]
    answers = await session.get_many([f"{mo.default_path}/{n}/ServerID" for n in names])
    for name, (_, server_id) in zip(names, answers, strict=True):
        if _value(server_id) == ctx.target.server_id:
            return f"{mo.default_path}/{name}"
    raise Inconclusive(
        f"no account with ServerID {ctx.target.server_id} under {mo.default_path} (seen {names})"
    )


def _value(results: Results | None) -> str | bytes | None:
    if results is None or not results.items:
        return None
    return results.items[0].data


async def _walk(session: DeviceSession, root: str, definition: NodeDef) -> list[Found]:
    """Every node below ``root`` the server may see, each with its DDF definition."""
    found = [Found(root, definition)]
    frontier = [(root, definition)]
    while frontier:
        interiors = [(p, d) for p, d in frontier if d.is_interior and not d.is_open]
        frontier = []
        answers = await session.get_many([p for p, _ in interiors])
        for (path, node), (status, results) in zip(interiors, answers, strict=True):
            if code_of(status) != 200:
                continue
            for name in [n for n in str(_value(results) or "").split("/") if n]:
                child = node.child(name)
                found.append(Found(f"{path}/{name}", child))
                if child is not None and child.is_interior:
                    frontier.append((f"{path}/{name}", child))
    return found


@dataclass
class Tree:
    session: DeviceSession
    root: str
    nodes: list[Found]

    def leaves(self, *, readable: bool | None = None) -> list[tuple[str, NodeDef]]:
        out = []
        for found in self.nodes:
            d = found.definition
            if d is None or not d.is_leaf:
                continue
            if readable is not None and (Access.GET in d.access) != readable:
                continue
            out.append((found.path, d))
        return out


async def _tree(ctx: DeviceContext, mo: MODef) -> Tree:
    session = await ctx.session()
    root = await _root(ctx, session, mo)
    definition = mo.root.placeholder_child if mo is DMACC else mo.root
    assert definition is not None
    nodes = await _walk(session, root, definition)
    return Tree(session, root, nodes)


def _required(definition: NodeDef, path: str) -> list[str]:
    """Paths of the nodes ``definition`` requires below ``path`` (fixed names only)."""
    out = []
    for child in definition.children:
        if child.is_placeholder or child.occurrence.optional:
            continue
        out.append(f"{path}/{child.name}")
    return out


async def _occurrence(ctx: DeviceContext, mo: MODef) -> None:
    tree = await _tree(ctx, mo)
    present = {f.path for f in tree.nodes}
    missing: list[str] = []
    for found in tree.nodes:
        d = found.definition
        if d is None or not d.is_interior:
            continue
        for path in _required(d, found.path):
            if path not in present:
                missing.append(path)
        placeholder = d.placeholder_child
        if (
            placeholder is not None
            and not placeholder.occurrence.optional
            and not any(p.startswith(found.path + "/") for p in present)
        ):
            missing.append(f"{found.path}/{placeholder.name}")
    check(not missing, f"every node {mo.name}'s DDF requires", f"missing {missing}")
    await tree.session.close()


async def _structure(ctx: DeviceContext, mo: MODef) -> None:
    tree = await _tree(ctx, mo)
    undeclared = [f.path for f in tree.nodes if f.definition is None]
    check(not undeclared, f"only children {mo.name}'s DDF declares", f"undeclared {undeclared}")
    await tree.session.close()


async def _property(ctx: DeviceContext, mo: MODef, prop: str, wanted: Callable[[NodeDef], str]) -> None:
    tree = await _tree(ctx, mo)
    leaves = tree.leaves(readable=True)
    answers = await tree.session.get_many([f"{path}?prop={prop}" for path, _ in leaves])
    wrong = []
    for (path, d), (status, results) in zip(leaves, answers, strict=True):
        if code_of(status) != 200:
            wrong.append(f"{path}: Status {code_of(status)}")
            continue
        seen = str(_value(results))
        if seen.lower() != wanted(d).lower():
            wrong.append(f"{path}: {seen} (DDF {wanted(d)})")
    check(not wrong, f"each leaf's {prop} as the DDF says", "; ".join(wrong))
    await tree.session.close()


async def _values(ctx: DeviceContext, mo: MODef) -> None:
    tree = await _tree(ctx, mo)
    leaves = tree.leaves(readable=True)
    answers = await tree.session.get_many([path for path, _ in leaves])
    wrong = []
    for (path, d), (status, results) in zip(leaves, answers, strict=True):
        if code_of(status) != 200:
            wrong.append(f"{path}: Status {code_of(status)}")
            continue
        value = _value(results)
        if isinstance(value, bytes):
            continue  # binary: any bytes are a value
        problem = d.value_error(value or "")
        if problem and value:
            wrong.append(f"{path}: {problem}")
    check(not wrong, "every value valid for its DDF Format", "; ".join(wrong))
    await tree.session.close()


async def _secret(ctx: DeviceContext, mo: MODef) -> None:
    tree = await _tree(ctx, mo)
    secrets_ = tree.leaves(readable=False)
    if not secrets_:
        await tree.session.close()
        return
    answers = await tree.session.get_many([path for path, _ in secrets_])
    leaked = [
        path for (path, _), (status, _) in zip(secrets_, answers, strict=True) if code_of(status) == 200
    ]
    check(not leaked, "Get refused (405/425) on leaves the DDF gives no Get", f"returned {leaked}")
    await tree.session.close()


async def _read_only(ctx: DeviceContext, mo: MODef) -> None:
    tree = await _tree(ctx, mo)
    fixed = [(p, d) for p, d in tree.leaves(readable=True) if Access.REPLACE not in d.access]
    if not fixed:
        await tree.session.close()
        return
    answers = await tree.session.get_many([path for path, _ in fixed])
    commands = []
    for (path, d), (_, results) in zip(fixed, answers, strict=True):
        value = _value(results)
        commands.append(replace(path, value if value is not None else "", fmt=d.format.value))
    statuses: list[Status | None] = await tree.session.run(*commands)
    accepted = [
        path for (path, _), status in zip(fixed, statuses, strict=True) if code_of(status) in (200, 201)
    ]
    check(
        not accepted, "Replace refused (405/425) on leaves the DDF gives no Replace", f"accepted {accepted}"
    )
    await tree.session.close()


_RULES: dict[str, tuple[str, Callable[[DeviceContext, MODef], Awaitable[None]], str, str | None]] = {
    "OCC": (
        "every node the DDF requires is present",
        _occurrence,
        "Walk the object with Get on each interior node.",
        None,
    ),
    "STRUCT": (
        "no child the DDF does not declare",
        _structure,
        "Walk the object with Get on each interior node.",
        None,
    ),
    "FMT": (
        "each leaf's Format is the DDF's",
        lambda ctx, mo: _property(ctx, mo, "Format", lambda d: d.format.value),
        "Get ?prop=Format of every readable leaf.",
        PROPS,
    ),
    "TYPE": (
        "each leaf's MIME type is the DDF's",
        lambda ctx, mo: _property(ctx, mo, "Type", lambda d: d.mime or "text/plain"),
        "Get ?prop=Type of every readable leaf.",
        PROPS,
    ),
    "VAL": ("each value is valid for its Format", _values, "Get every readable leaf.", None),
    "ACC-GET": (
        "leaves without Get access are never returned",
        _secret,
        "Get every leaf the DDF gives no Get.",
        None,
    ),
    "ACC-REP": (
        "leaves without Replace access refuse Replace",
        _read_only,
        "Replace every readable leaf the DDF gives no Replace, with its current value.",
        None,
    ),
}


def _register(mo: MODef, area: str) -> None:
    for number, (key, (title, check_rule, step, capability)) in enumerate(_RULES.items(), start=1):

        async def run(
            ctx: DeviceContext, mo: MODef = mo, check_rule: Callable[..., Awaitable[None]] = check_rule
        ) -> None:
            await check_rule(ctx, mo)

        case(
            f"MO-CLI-{area}-{number:03d}",
            f"{mo.name}: {title}",
            rule=STD,
            role=Role.DEVICE,
            capability=capability,
            preconditions=(f"The device has {mo.default_path} ({mo.urn}).",),
            steps=(
                f"Open a session; find {mo.name}{' (the account of the runner)' if mo is DMACC else ''}.",
                step,
            ),
            pass_criteria=(f"{mo.name}: {title} ({key}).",),
        )(run)


_register(DEVINFO, "DEVINFO")
_register(DEVDETAIL, "DEVDETAIL")
_register(DMACC, "DMACC")
