# Shared by scripts/test, scripts/demo and scripts/lock: make .venv (once) and install omadm into it.
# Sourced, not executed. Re-installs only when pyproject.toml or requirements.lock changed since
# the last install. The dependencies come from requirements.lock (every one pinned, each file
# checked against its hash: pip --require-hashes), then omadm itself without dependencies; the
# lock holds the server and dev extras too. scripts/lock refreshes it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "omadm needs Python 3.11 or newer; '$PY' is $("$PY" --version 2>&1)" >&2
    exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
    echo "==> creating $VENV"
    "$PY" -m venv "$VENV"
fi
STAMP="$VENV/.omadm-installed"
LOCK="$ROOT/requirements.lock"
if [ ! -f "$STAMP" ] || [ "$ROOT/pyproject.toml" -nt "$STAMP" ] || [ "$LOCK" -nt "$STAMP" ]; then
    echo "==> installing omadm and its locked dependencies (requirements.lock) into $VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    if [ -f "$LOCK" ]; then
        "$VENV/bin/python" -m pip install --quiet --require-hashes -r "$LOCK"
        "$VENV/bin/python" -m pip install --quiet --no-deps -e "$ROOT"
    else  # only before the first scripts/lock: the newest releases pyproject.toml allows
        echo "==> no requirements.lock: installing unpinned (scripts/lock makes it)"
        "$VENV/bin/python" -m pip install --quiet -e "$ROOT[server,dev]"
    fi
    touch "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
cd "$ROOT"
