#!/usr/bin/env bash
# Create isolated virtualenvs for the benchmark's peer systems (Prefect 3, DBOS Transact).
#
#   bench/.venvs/prefect   pip install "prefect>=3,<4"
#   bench/.venvs/dbos      pip install dbos
#
# Idempotent: a venv whose stamp file exists is left alone. Delete bench/.venvs/<name>
# (or pass --force) to reinstall. Never touches the project's .venv or the system Python.
# Exit status is non-zero if any peer failed to install; the others are still installed.
set -u

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENVS="${STRATOFLOW_BENCH_VENVS:-$HERE/.venvs}"
PY="${PYTHON:-python3}"
FORCE=0
[ "${1:-}" = "--force" ] && FORCE=1

mkdir -p "$VENVS"
status=0

install_peer() {
    local name="$1"; shift
    local dir="$VENVS/$name"
    local stamp="$dir/.stratoflow-bench-installed"
    if [ "$FORCE" = 0 ] && [ -f "$stamp" ] && [ -x "$dir/bin/python" ]; then
        echo "[setup_peers] $name: already installed ($(cat "$stamp")), skipping"
        return 0
    fi
    echo "[setup_peers] $name: creating venv at $dir"
    rm -rf "$dir"
    if ! "$PY" -m venv "$dir"; then
        echo "[setup_peers] $name: ERROR: '$PY -m venv' failed" >&2
        return 1
    fi
    echo "[setup_peers] $name: upgrading pip"
    "$dir/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip \
        || echo "[setup_peers] $name: warning: pip upgrade failed, continuing with bundled pip" >&2
    echo "[setup_peers] $name: pip install $*"
    if ! "$dir/bin/python" -m pip install --quiet --disable-pip-version-check "$@"; then
        echo "[setup_peers] $name: ERROR: pip install $* failed" >&2
        return 1
    fi
    local versions
    versions="$("$dir/bin/python" -m pip list --disable-pip-version-check --format=freeze 2>/dev/null \
        | grep -iE '^(prefect|dbos)==' | tr '\n' ' ')"
    echo "${versions:-installed} $(date -u +%Y-%m-%dT%H:%M:%SZ)" > "$stamp"
    echo "[setup_peers] $name: done (${versions})"
}

install_peer prefect "prefect>=3,<4" || status=1
install_peer dbos "dbos" || status=1

exit $status
