# Shared set-up for scripts/run, scripts/test and scripts/bench (sourced, not run).
# Creates .venv with a supported Python (3.11 or 3.12) and installs the project.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv"

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        echo "need root for: $*" >&2; return 1; fi
}

apt_install() {
    # -o DPkg::Lock::Timeout: wait for a concurrent apt run instead of failing.
    if [ -z "${APT_UPDATED:-}" ]; then
        as_root apt-get update -qq -o DPkg::Lock::Timeout=300
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends \
        -o DPkg::Lock::Timeout=300 "$@"
}

pick_python() {
    for py in python3.12 python3.11 python3; do
        if command -v "$py" >/dev/null &&
            "$py" -c 'import sys; sys.exit(not ((3, 11) <= sys.version_info[:2] <= (3, 12)))'; then
            echo "$py"; return 0
        fi
    done
    echo "microsip-engine needs Python 3.11 or 3.12 (the pjsua2 wheel has no newer build)" >&2
    return 1
}

# ensure_venv [extra]: create .venv if missing and install the project (with [extra]).
ensure_venv() {
    local extra=${1:-}
    local stamp="$VENV/.installed${extra:+-$extra}"
    if [ ! -x "$VENV/bin/python" ]; then
        local py; py=$(pick_python)
        if ! "$py" -m venv "$VENV" 2>/dev/null; then
            rm -rf "$VENV"
            apt_install python3-venv
            "$py" -m venv "$VENV"
        fi
    fi
    if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
        "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
        "$VENV/bin/python" -m pip install -q -e "$ROOT${extra:+[$extra]}"
        touch "$stamp"
    fi
}
