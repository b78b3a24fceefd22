"""The agent's data directory and secret files: readable by the agent's user only.

The data directory holds secrets: ``tree.sqlite`` keeps the DMAcc credentials (the
device's password and the server's, in plaintext, because MD5/HMAC digest authentication
needs them), ``alerts.sqlite`` the SCOMO journal and its reports, and often ``omadm.toml``.
Created with the usual umask (022) they would be 0644 in a 0755 directory: any local user
could read the credentials and impersonate the device or the server. So (issue 13, point 5):

* the data directory is 0700 (:func:`secure_data_dir`, called once at agent start), and
* every file the agent creates in it is 0600, from the first byte on (:func:`create_private_file`,
  :func:`prepare_private_database`, :func:`private_opener`).

How files are made private, and why this way:

* **Created with ``os.open(..., 0o600)`` before anything else opens them**, never by changing
  the process umask around an open: the umask is process-wide, so while it is changed every
  other thread (the Package #0 listener, the downloader) and every hook the agent forks would
  create files with it too, and a file created with the wrong mode and chmod-ed afterwards is
  readable in between.
* **SQLite's side files follow their database.** SQLite's unix VFS creates ``-wal``, ``-shm``
  and ``-journal`` with the permission bits of the database file itself (and fchmods them to
  those bits, whatever the umask), so a 0600 database gets 0600 side files. Side files left by
  an older omadm with other modes are repaired before and after the database is opened.
* **Repair strips the group and other bits only** (``mode & 0o700``): 0644 becomes 0600 and
  0755 becomes 0700, and the owner keeps what it had.

Only files omadm knows as its own are touched, and the directory itself is made 0700 only
when everything in it is omadm's: ``data_dir`` defaults to the directory of the
configuration file, and a configuration kept in ``/etc`` or a home directory must not make
that directory private (which would break the system or the user). Such a shared directory
is left as it is, with a warning; the agent's own files in it are still made 0600.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

__all__ = [
    "OWN_ENTRIES",
    "PRIVATE_DIR_MODE",
    "PRIVATE_FILE_MODE",
    "SQLITE_SIDE_SUFFIXES",
    "create_private_file",
    "make_private",
    "prepare_private_database",
    "private_opener",
    "secure_data_dir",
]

log = logging.getLogger("omadm.tree.files")

#: Mode of the data directory: the agent's user only.
PRIVATE_DIR_MODE = 0o700
#: Mode of the files the agent creates in it.
PRIVATE_FILE_MODE = 0o600
#: The files SQLite keeps beside a database (WAL, shared memory, rollback journal).
SQLITE_SIDE_SUFFIXES = ("-wal", "-shm", "-journal")

#: Files and directories the agent itself puts directly in its data directory.
OWN_ENTRIES = frozenset(
    {
        "tree.sqlite",  # the DM tree, with the DMAcc credentials
        "alerts.sqlite",  # the Generic Alert queue and the SCOMO journal
        "agent.lock",  # one working agent per data directory
        "packages",  # delivered SCOMO packages
        "downloads",  # partial downloads
        "components",  # the default install root
        "trust",  # the default trust directory (publisher keys, policy.toml)
    }
)
#: Databases among them: their side files are the agent's too.
_DATABASES = ("tree.sqlite", "alerts.sqlite")
#: Names that are certainly the agent's, made private even in a shared directory.
_CERTAINLY_OWN = frozenset(
    {*_DATABASES, *(d + s for d in _DATABASES for s in SQLITE_SIDE_SUFFIXES), "agent.lock"}
)
#: Prefixes of the agent's temporary entries (SCOMO staging directories).
_OWN_PREFIXES = ("omadm-install-",)
#: Suffixes of the agent's configuration file and of its temporary copy (``save_config``).
_OWN_SUFFIXES = (".toml", ".tmp")


def _is_own(name: str) -> bool:
    return (
        name in OWN_ENTRIES
        or name in _CERTAINLY_OWN
        or name.startswith(_OWN_PREFIXES)
        or (not name.startswith(".") and name.endswith(_OWN_SUFFIXES))
    )


def make_private(path: Path) -> str | None:
    """Take the group and other permission bits off ``path`` (not following a symlink).

    Returns what was changed (``"<path> 0644 -> 0600"``), or None when it already was private,
    does not exist or is a symlink (whatever it points at is not ours to change). A file the
    agent may not change (owned by someone else) is logged and left: the agent can then
    usually not use it either, and says so where it opens it.
    """
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(info.st_mode):
        return None
    mode = stat.S_IMODE(info.st_mode)
    private = mode & ~0o077
    if private == mode:
        return None
    try:
        os.chmod(path, private)
    except PermissionError as exc:
        log.warning("cannot make %s private (mode %04o): %s", path, mode, exc)
        return None
    return f"{path} {mode:04o} -> {private:04o}"


def private_opener(path: str | os.PathLike[str], flags: int) -> int:
    """An ``opener`` for :func:`open` that creates a missing file 0600 (e.g. ``agent.lock``).

    ``open(path, "a+", opener=private_opener)``: the file is born private, whatever the umask.
    An existing file keeps its mode (see :func:`make_private`).
    """
    return os.open(path, flags | getattr(os, "O_CLOEXEC", 0), PRIVATE_FILE_MODE)


def create_private_file(path: Path) -> list[str]:
    """Make sure ``path`` exists and only its owner can read or write it.

    A missing file is created empty with mode 0600 (``O_CREAT`` with that mode: private from
    its first instant; the umask can only take bits away). An existing one loses its group
    and other bits. Returns what was repaired (empty when nothing was).

    Raises:
        OSError: the file cannot be created (its directory is missing or not writable).
    """
    flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
    os.close(os.open(path, flags, PRIVATE_FILE_MODE))
    repaired = make_private(path)
    return [repaired] if repaired else []


def prepare_private_database(path: str | Path) -> list[str]:
    """Before ``sqlite3.connect(path)``: the database file exists and is 0600, and so are its side files.

    Call it again after the connection has switched to WAL to repair side files that an
    older omadm left with wider modes (SQLite reuses existing ones as they are). ``:memory:``
    and ``""`` (temporary databases) need nothing. Returns what was repaired, and logs it.

    Raises:
        OSError: the database file cannot be created.
    """
    name = str(path)
    if name in ("", ":memory:"):
        return []
    database = Path(name)
    repaired = create_private_file(database)
    for suffix in SQLITE_SIDE_SUFFIXES:
        side = make_private(Path(name + suffix))
        if side:
            repaired.append(side)
    if repaired:
        log.warning("%s was readable by other users; made private: %s", database, "; ".join(repaired))
    return repaired


def secure_data_dir(path: Path) -> list[str]:
    """Create the agent's data directory 0700, or repair it and its files; returns what was repaired.

    The one call the agent makes at start, before it opens anything in ``path``:

    * a missing directory is created with mode 0700 (its missing parents as usual);
    * an existing one loses its group and other bits, provided everything in it is the agent's
      (:data:`OWN_ENTRIES`, SQLite side files, SCOMO staging directories, ``*.toml``/``*.tmp``);
      a directory that also holds other things is shared (``/etc``, a home directory) and is
      left as it is, with a warning to give the agent a directory of its own;
    * the files directly in it lose their group and other bits: every regular file in a
      directory of the agent's own, only the agent's databases, their side files and
      ``agent.lock`` in a shared one. Subdirectories (installed components, packages, public
      keys) hold nothing secret and keep their modes: the 0700 directory hides them.

    Each repair is logged once (one warning line naming every file) and returned as
    ``"<path> <old mode> -> <new mode>"``. Idempotent: a second call finds nothing to do.

    Raises:
        OSError: the directory cannot be created, or is not a directory.
    """
    path = Path(path)
    repaired: list[str] = []
    if not path.exists():
        path.mkdir(parents=True, mode=PRIVATE_DIR_MODE)
        os.chmod(path, PRIVATE_DIR_MODE)  # mkdir's mode went through the umask
        return repaired
    if not path.is_dir():
        raise NotADirectoryError(f"the data directory {path} is not a directory")
    entries = sorted(os.listdir(path))
    foreign = [name for name in entries if not _is_own(name)]
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        log.warning(
            "the data directory %s also holds %s, which omadm did not put there: its mode is left "
            "as it is (only omadm's own files in it are made private); set data_dir to a directory "
            "of its own",
            path,
            shown,
        )
    else:
        changed = make_private(path)
        if changed:
            repaired.append(changed)
    for name in entries:
        if foreign and name not in _CERTAINLY_OWN:
            continue
        entry = path / name
        try:
            info = os.lstat(entry)
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(info.st_mode):
            continue  # subdirectories and symlinks: see the docstring
        changed = make_private(entry)
        if changed:
            repaired.append(changed)
    if repaired:
        log.warning(
            "the data directory %s was readable by other users; made private: %s", path, "; ".join(repaired)
        )
    return repaired
