#!/usr/bin/env bash
# Create isolated virtualenvs for the benchmark's peer systems.
#
#   bench/.venvs/prefect   pip install "prefect>=3,<4"   (latest Prefect 3 from PyPI)
#   bench/.venvs/dbos      pip install dbos              (latest DBOS Transact from PyPI)
#
# Usage: bash bench/setup_peers.sh [--force] [prefect] [dbos]     (no names = both)
#
# Idempotent: a venv whose stamp file exists is left alone; --force (or deleting
# bench/.venvs/<name>) reinstalls. Never touches the project's .venv or the system Python.
# Exits non-zero if any requested peer failed to install; the others are still installed.
set -u

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENVS="${STRATOFLOW_BENCH_VENVS:-$HERE/.venvs}"
PY="${PYTHON:-python3}"
FORCE=0
PEERS=()
for arg in "$@"; do
    case "$arg" in
        --force) FORCE=1 ;;
        prefect|dbos) PEERS+=("$arg") ;;
        *) echo "usage: $0 [--force] [prefect] [dbos]" >&2; exit 2 ;;
    esac
done
[ ${#PEERS[@]} -eq 0 ] && PEERS=(prefect dbos)

spec_for() {
    case "$1" in
        prefect) echo "prefect>=3,<4" ;;
        dbos) echo "dbos" ;;
    esac
}

mkdir -p "$VENVS"
status=0

pip_quiet() {  # pip with its output in a log, shown (minus harmless noise) only on failure
    local py="$1" log="$2"; shift 2
    if "$py" -m pip --disable-pip-version-check "$@" >"$log" 2>&1; then
        return 0
    fi
    grep -v "is ignored: it is neither a file nor a directory" "$log" | tail -n 30 >&2
    return 1
}

install_peer() {
    local name="$1" spec dir stamp log
    spec="$(spec_for "$name")"
    dir="$VENVS/$name"
    stamp="$dir/.stratoflow-bench-installed"
    log="$VENVS/$name-install.log"
    if [ "$FORCE" = 0 ] && [ -f "$stamp" ] && [ -x "$dir/bin/python" ]; then
        echo "[setup_peers] $name: already installed ($(cat "$stamp")); skipping"
        return 0
    fi
    echo "[setup_peers] $name: creating venv at $dir"
    rm -rf "$dir"
    if ! "$PY" -m venv "$dir"; then
        echo "[setup_peers] $name: ERROR: '$PY -m venv $dir' failed" >&2
        return 1
    fi
    echo "[setup_peers] $name: upgrading pip"
    pip_quiet "$dir/bin/python" "$log" install --upgrade pip \
        || echo "[setup_peers] $name: warning: pip upgrade failed; continuing with the bundled pip" >&2
    echo "[setup_peers] $name: pip install '$spec' (log: $log)"
    if ! pip_quiet "$dir/bin/python" "$log" install "$spec"; then
        echo "[setup_peers] $name: ERROR: pip install '$spec' failed (full log: $log)" >&2
        rm -rf "$dir"   # no half-installed venv left behind to be mistaken for a good one
        return 1
    fi
    local version
    version="$("$dir/bin/python" -c "from importlib.metadata import version; print(version('$name'))" 2>/dev/null)"
    echo "$name==${version:-?} installed $(date -u +%Y-%m-%dT%H:%M:%SZ)" > "$stamp"
    echo "[setup_peers] $name: done ($name==${version:-?})"
}

for peer in "${PEERS[@]}"; do
    install_peer "$peer" || status=1
done
exit $status
