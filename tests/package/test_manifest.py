"""The manifest: every validation rule with its message, canonical JSON, versions, round trips."""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from omadm.package.errors import ManifestError, PackageError
from omadm.package.manifest import (
    HOOK_NAMES,
    ComponentManifest,
    Dependency,
    FileEntry,
    PackageManifest,
    compare_versions,
    parse_version,
    path_problem,
)
from omadm.protocol.codes import ScomoResult

from .helpers import APP, APP_PREFIX, sha256

HASH = sha256(b"x")


def valid() -> dict[str, Any]:
    """A valid manifest as JSON data; each table row breaks exactly one rule."""
    return {
        "format": 1,
        "id": "com.example.pkg",
        "name": "Example",
        "version": "1.0.0",
        "description": "An example.",
        "allow_downgrade": False,
        "components": [
            {
                "id": APP,
                "name": "App",
                "version": "1.0.0",
                "env_type": "archive",
                "description": "",
                "hooks": {"install": "hooks/install"},
                "depends": [{"id": "com.example.lib", "min_version": "1.0", "max_version": "2"}],
                "files": [
                    {"path": APP_PREFIX + "bin/run", "size": 1, "sha256": HASH, "mode": "0755"},
                    {"path": APP_PREFIX + "hooks/install", "size": 1, "sha256": HASH, "mode": "0755"},
                    {"path": APP_PREFIX + "share/data", "size": 1, "sha256": HASH, "mode": "0644"},
                ],
            }
        ],
    }


def component(data: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = data["components"][0]
    return result


def first_file(data: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = component(data)["files"][0]
    return result


def add_file(path: str, mode: str = "0644") -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        component(data)["files"].append({"path": path, "size": 1, "sha256": HASH, "mode": mode})

    return mutate


def setter(
    get: Callable[[dict[str, Any]], dict[str, Any]], key: str, value: object
) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        get(data)[key] = value

    return mutate


def deleter(get: Callable[[dict[str, Any]], dict[str, Any]], key: str) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        del get(data)[key]

    return mutate


def top(data: dict[str, Any]) -> dict[str, Any]:
    return data


def dep(data: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = component(data)["depends"][0]
    return result


def duplicate_component(data: dict[str, Any]) -> None:
    data["components"].append(json.loads(json.dumps(component(data))))


def duplicate_dependency(data: dict[str, Any]) -> None:
    component(data)["depends"].append(dict(dep(data)))


NFD = unicodedata.normalize("NFD", "caf\u00e9")

RULES: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("format from the future", setter(top, "format", 2), "unsupported manifest format 2"),
    ("format as a string", setter(top, "format", "1"), "format must be an integer"),
    ("missing id", deleter(top, "id"), "id is missing"),
    ("empty id", setter(top, "id", ""), "package id is empty"),
    ("id with a space", setter(top, "id", "com example"), "may only contain letters"),
    ("id with a slash", setter(top, "id", "com/example"), "may only contain letters"),
    ("id too long", setter(top, "id", "a" * 129), "longer than 128"),
    ("id '..'", setter(top, "id", ".."), "'..' is not allowed"),
    ("unknown top-level key", setter(top, "extra", 1), "unknown key 'extra'"),
    ("version not PEP 440", setter(top, "version", "banana"), "'banana' is not a PEP 440 version"),
    ("version not normal form", setter(top, "version", "1.0-RC1"), "write '1.0rc1'"),
    ("version as a number", setter(top, "version", 1), "version must be a string"),
    ("empty name", setter(top, "name", " "), "package name is empty"),
    ("name with a newline", setter(top, "name", "a\nb"), "package name contains a control character"),
    ("description too long", setter(top, "description", "x" * 5000), "longer than 4096"),
    (
        "allow_downgrade not bool",
        setter(top, "allow_downgrade", "yes"),
        "allow_downgrade must be true or false",
    ),
    ("no components", setter(top, "components", []), "at least one component"),
    ("components not an array", setter(top, "components", {}), "components must be an array"),
    ("duplicate component", duplicate_component, f"component {APP} is listed twice"),
    ("component id '.'", setter(component, "id", "."), "'.' is not allowed"),
    ("component unknown key", setter(component, "upgrade", "x"), "unknown key 'upgrade'"),
    ("component version", setter(component, "version", "v1"), "write '1'"),
    (
        "env_type with a space",
        setter(component, "env_type", "java me"),
        "env_type 'java me' may only contain",
    ),
    ("unknown hook", setter(component, "hooks", {"upgrade": "bin/run"}), "unknown hook 'upgrade'"),
    (
        "hook not a file",
        setter(component, "hooks", {"install": "hooks/missing"}),
        "not one of the component's files",
    ),
    (
        "hook not executable",
        setter(component, "hooks", {"remove": "share/data"}),
        "share/data is not executable",
    ),
    ("hook escapes", setter(component, "hooks", {"install": "../x"}), "contains '..'"),
    (
        "hook path not a string",
        setter(component, "hooks", {"install": 1}),
        "hook install must be a path string",
    ),
    ("absolute file path", setter(first_file, "path", "/etc/passwd"), "'/etc/passwd' is absolute"),
    ("file path with ..", setter(first_file, "path", APP_PREFIX + "../x/y"), "contains '..'"),
    ("file path with .", setter(first_file, "path", APP_PREFIX + "./bin/run"), "not normalized"),
    ("file path with //", setter(first_file, "path", APP_PREFIX + "bin//run"), "not normalized"),
    ("file path with a backslash", setter(first_file, "path", APP_PREFIX + "bin\\run"), "backslash"),
    (
        "file path with a control character",
        setter(first_file, "path", APP_PREFIX + "a\x01"),
        "control character",
    ),
    ("file path not NFC", setter(first_file, "path", APP_PREFIX + NFD), "NFC"),
    (
        "file of another component",
        setter(first_file, "path", "components/other/bin/run"),
        "not under components/",
    ),
    ("file at the top", setter(first_file, "path", "run"), "not under components/"),
    ("duplicate file", add_file(APP_PREFIX + "bin/run"), "listed twice"),
    ("file inside a file", add_file(APP_PREFIX + "bin/run/x"), "is a file but"),
    ("negative size", setter(first_file, "size", -1), "size -1 is negative"),
    ("fractional size", setter(first_file, "size", 1.5), "not an integer"),
    ("boolean size", setter(first_file, "size", True), "size must be an integer, not a boolean"),
    ("sha256 upper case", setter(first_file, "sha256", HASH.upper()), "64 lowercase hex digits"),
    ("sha256 short", setter(first_file, "sha256", "abc"), "64 lowercase hex digits"),
    ("mode 0777", setter(first_file, "mode", "0777"), "mode '0777' is not allowed"),
    ("mode as a number", setter(first_file, "mode", 420), "mode must be a string"),
    ("file unknown key", setter(first_file, "owner", "root"), "unknown key 'owner'"),
    ("missing sha256", deleter(first_file, "sha256"), "sha256 is missing"),
    ("self dependency", setter(dep, "id", APP), "cannot depend on itself"),
    ("empty range", setter(dep, "max_version", "1.0"), "is not below max_version"),
    ("bad dependency version", setter(dep, "min_version", "latest"), "'latest' is not a PEP 440"),
    ("duplicate dependency", duplicate_dependency, "dependency com.example.lib is listed twice"),
    ("dependency unknown key", setter(dep, "optional", True), "unknown key 'optional'"),
]


@pytest.mark.parametrize(("mutate", "message"), [r[1:] for r in RULES], ids=[r[0] for r in RULES])
def test_each_rule_is_enforced_with_a_clear_message(
    mutate: Callable[[dict[str, Any]], None], message: str
) -> None:
    data = valid()
    mutate(data)
    with pytest.raises(ManifestError) as caught:
        PackageManifest.from_json(json.dumps(data).encode())
    assert message in str(caught.value)
    assert caught.value.message.startswith("invalid manifest")
    assert caught.value.result == ScomoResult.FAILED_PACKAGE_VALIDATION


def test_the_valid_baseline_parses() -> None:
    manifest = PackageManifest.from_json(json.dumps(valid()).encode())
    assert manifest.components[0].hooks == {"install": "hooks/install"}
    assert manifest.components[0].depends == (Dependency("com.example.lib", "1.0", "2"),)


def test_messages_say_where_the_problem_is() -> None:
    data = valid()
    component(data)["files"][2]["size"] = -3
    with pytest.raises(
        ManifestError, match=r"components\[0\]: files\[2\]: file .*share/data: size -3 is negative"
    ):
        PackageManifest.from_json(json.dumps(data).encode())


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xff\xfe{}", "not UTF-8"),
        (b"{", "not JSON"),
        (b"[]", "must be a JSON object, not an array"),
        (b'{"format": 1, "format": 1}', "key 'format' appears twice"),
        (b'{"format": NaN}', "NaN is not allowed"),
        (b'{"format": 1.0}', "not an integer"),
        (b'{"format": 1}', "id is missing"),
    ],
)
def test_json_level_refusals(data: bytes, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        PackageManifest.from_json(data)


def test_a_manifest_error_is_a_package_error() -> None:
    assert issubclass(ManifestError, PackageError)


def test_canonical_json_is_sorted_compact_utf8() -> None:
    data = valid()
    data["name"] = "Caf\u00e9 \u2615"
    manifest = PackageManifest.from_json(json.dumps(data, indent=4).encode())
    out = manifest.to_json()
    assert (
        out == json.dumps(json.loads(out), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    )
    assert "Caf\u00e9 \u2615".encode() in out  # UTF-8, not \u escapes
    assert b" :" not in out and b", " not in out
    assert PackageManifest.from_json(out).to_json() == out


def test_files_are_sorted_so_listing_order_does_not_change_the_bytes() -> None:
    data = valid()
    component(data)["files"].reverse()
    assert (
        PackageManifest.from_json(json.dumps(data).encode()).to_json()
        == PackageManifest.from_json(json.dumps(valid()).encode()).to_json()
    )


def test_optional_keys_default() -> None:
    data = valid()
    for key in ("description", "allow_downgrade"):
        del data[key]
    for key in ("env_type", "description", "hooks", "depends"):
        del component(data)[key]
    manifest = PackageManifest.from_json(json.dumps(data).encode())
    assert manifest.description == "" and manifest.allow_downgrade is False
    assert manifest.components[0].env_type == "archive"
    assert dict(manifest.components[0].hooks) == {} and manifest.components[0].depends == ()


def test_dataclasses_validate_on_construction() -> None:
    with pytest.raises(ManifestError, match="mode 777"):
        FileEntry(APP_PREFIX + "x", 1, HASH, 0o777)
    with pytest.raises(ManifestError, match="at least one component"):
        PackageManifest(id="p", name="P", version="1", components=())
    with pytest.raises(ManifestError, match="not under"):
        ComponentManifest(id=APP, name="App", version="1", files=(FileEntry("components/x/y", 1, HASH),))


def test_manifests_are_hashable_values() -> None:
    a = PackageManifest.from_json(json.dumps(valid()).encode())
    b = PackageManifest.from_json(json.dumps(valid()).encode())
    assert a == b and hash(a) == hash(b)
    with pytest.raises(TypeError):
        a.components[0].hooks["remove"] = "x"  # type: ignore[index]


def test_helpers_on_the_manifest() -> None:
    manifest = PackageManifest.from_json(json.dumps(valid()).encode())
    app = manifest.component(APP)
    assert app.prefix == APP_PREFIX
    assert app.relative_path(app.files[0]) == "bin/run"
    assert manifest.total_size == 3 and len(manifest.files) == 3
    with pytest.raises(KeyError):
        manifest.component("nope")


# --------------------------------------------------------------------------- versions


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("1.0", "1.0.0", 0),
        ("1.0", "1.1", -1),
        ("2.0", "1.10", 1),
        ("1.0rc1", "1.0", -1),
        ("1.0.post1", "1.0", 1),
    ],
)
def test_compare_versions(a: str, b: str, expected: int) -> None:
    assert compare_versions(a, b) == expected
    assert compare_versions(b, a) == -expected


def test_compare_versions_refuses_non_pep440() -> None:
    with pytest.raises(ManifestError, match="not a PEP 440"):
        compare_versions("1.0", "1:2.3-4ubuntu1")


def test_parse_version_explains_normal_form() -> None:
    assert str(parse_version("1.0rc1")) == "1.0rc1"
    with pytest.raises(ManifestError, match=r"write '1\.0'"):
        parse_version("v1.0")


@pytest.mark.parametrize(
    ("dependency", "version", "ok"),
    [
        (Dependency("x"), "0.1", True),
        (Dependency("x", min_version="1.2"), "1.2", True),  # min inclusive
        (Dependency("x", min_version="1.2"), "1.1.9", False),
        (Dependency("x", max_version="2"), "2.0", False),  # max exclusive
        (Dependency("x", max_version="2"), "2.0rc1", False),  # a pre-release of 2 is already "2"
        (Dependency("x", max_version="2"), "1.99", True),
        (Dependency("x", "1.0", "2"), "1.5", True),
    ],
)
def test_dependency_range(dependency: Dependency, version: str, ok: bool) -> None:
    assert dependency.satisfied_by(version) is ok


def test_dependency_describe() -> None:
    assert Dependency("x", "1.0", "2").describe() == "x (>=1.0, <2)"
    assert Dependency("x").describe() == "x"


def test_path_problem_accepts_ordinary_paths() -> None:
    assert path_problem("components/a/bin/run") is None
    assert path_problem("components/a/caf\u00e9.txt") is None


# --------------------------------------------------------------------------- round trip

_segment = st.from_regex(r"[a-z0-9_-][a-z0-9._-]{0,11}", fullmatch=True)
_ids = st.from_regex(r"[A-Za-z0-9_+-][A-Za-z0-9._+-]{0,30}", fullmatch=True)
_versions = st.builds(
    lambda parts, pre: ".".join(map(str, parts)) + pre,
    st.lists(st.integers(0, 300), min_size=1, max_size=4),
    st.sampled_from(["", "rc1", "a2", ".post1", ".dev3"]),
)
_text = st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=40).filter(
    lambda s: bool(s.strip())
)


@st.composite
def components(draw: st.DrawFn, component_id: str) -> ComponentManifest:
    prefix = f"components/{component_id}/"
    # Directories are "d"-prefixed and files "f"-prefixed, so no path is both.
    relatives = draw(
        st.lists(
            st.builds(
                lambda dirs, name: "/".join([*("d" + d for d in dirs), "f" + name]),
                st.lists(_segment, max_size=2),
                _segment,
            ),
            max_size=5,
            unique=True,
        )
    )
    files = tuple(
        FileEntry(
            prefix + rel,
            draw(st.integers(0, 1 << 40)),
            sha256(rel.encode()),
            draw(st.sampled_from((0o644, 0o755))),
        )
        for rel in relatives
    )
    executables = [f.path[len(prefix) :] for f in files if f.mode == 0o755]
    hooks = {}
    if executables:
        for name in draw(st.lists(st.sampled_from(HOOK_NAMES), unique=True)):
            hooks[name] = draw(st.sampled_from(executables))
    dep_ids = draw(
        st.lists(_ids.filter(lambda i: i not in (component_id, ".", "..")), unique=True, max_size=2)
    )
    depends = []
    for dep_id in dep_ids:
        low = draw(st.none() | st.integers(0, 5))
        high = draw(st.none() | st.integers(6, 9))
        depends.append(
            Dependency(dep_id, None if low is None else str(low), None if high is None else str(high))
        )
    return ComponentManifest(
        id=component_id,
        name=draw(_text),
        version=draw(_versions),
        env_type=draw(st.sampled_from(["archive", "native", "python"])),
        description=draw(
            st.text(max_size=30).filter(
                lambda s: (
                    all(c in "\n\t" or ord(c) >= 0x20 for c in s)
                    and "\x7f" not in s
                    and not any(0xD800 <= ord(c) <= 0xDFFF for c in s)
                )
            )
        ),
        hooks=hooks,
        depends=tuple(depends),
        files=files,
    )


@st.composite
def manifests(draw: st.DrawFn) -> PackageManifest:
    ids = draw(st.lists(_ids.filter(lambda i: i not in (".", "..")), min_size=1, max_size=3, unique=True))
    return PackageManifest(
        id=draw(_ids.filter(lambda i: i not in (".", ".."))),
        name=draw(_text),
        version=draw(_versions),
        description=draw(st.sampled_from(["", "A package.", "Multi\nline\ttext \u00e9"])),
        components=tuple(draw(components(i)) for i in ids),
        allow_downgrade=draw(st.booleans()),
    )


@settings(max_examples=150, deadline=None)
@given(manifests())
def test_round_trip(manifest: PackageManifest) -> None:
    data = manifest.to_json()
    again = PackageManifest.from_json(data)
    assert again == manifest
    assert again.to_json() == data
    # Any JSON spelling of the same document parses to the same manifest.
    assert PackageManifest.from_json(json.dumps(json.loads(data), indent=1).encode()) == manifest
