# Shared set-up for scripts/run, scripts/test and scripts/bench (sourced, not run).
# Creates .venv with a supported Python (3.11 or 3.12) and installs the project.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Which pjsua2 the engine runs on: the PyPI wheel (default, .venv) or the one
# scripts/build-pjsua2 builds from Debian's source (.venv-source). Both stay installed
# side by side, so switching costs nothing and .venv never silently changes build.
PJSUA2_BUILD=${PJSUA2_BUILD:-wheel}

# select_build NAME: set PJSUA2_BUILD and VENV (NAME: wheel or source).
select_build() {
    case "$1" in
        wheel) VENV="$ROOT/.venv" ;;
        source) VENV="$ROOT/.venv-source" ;;
        *) echo "unknown pjsua2 build '$1' (expected wheel or source)" >&2; exit 2 ;;
    esac
    PJSUA2_BUILD=$1
}
select_build "$PJSUA2_BUILD"

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
            "$py" -c 'import sys; sys.exit(not ((3, 11) <= sys.version_info[:2] <= (3, 12)))' \
                2>/dev/null; then  # a pyenv shim for a version not selected says so on stderr
            echo "$py"; return 0
        fi
    done
    echo "microsip-engine needs Python 3.11 or 3.12 (the pjsua2 wheel has no newer build)" >&2
    return 1
}

# ensure_venv [extra] [wheel-dir]: create $VENV if missing and install the project
# (with [extra]). With wheel-dir (scripts/build-pjsua2), its pjsua2 wheel is installed
# and the PyPI one is not: every other dependency comes from pyproject.toml.
ensure_venv() {
    local extra=${1:-} wheels=${2:-}
    local stamp="$VENV/.installed${extra:+-$extra}${wheels:+-$(basename "$wheels")}"
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
        if [ -n "$wheels" ]; then
            "$VENV/bin/python" -m pip uninstall -y -q pjsua2-python >/dev/null 2>&1 || true
            "$VENV/bin/python" -m pip install -q --force-reinstall --no-deps "$wheels"/*.whl
            # shellcheck disable=SC2046  # one requirement per word
            "$VENV/bin/python" -m pip install -q $(requirements_without_pjsua2 "$extra")
            "$VENV/bin/python" -m pip install -q --no-deps -e "$ROOT"
        else
            "$VENV/bin/python" -m pip install -q -e "$ROOT${extra:+[$extra]}"
        fi
        touch "$stamp"
    fi
}

# requirements_without_pjsua2 [extra]: pyproject's dependencies (and [extra]'s), less
# the PyPI pjsua2 wheel, one per line.
requirements_without_pjsua2() {
    "$VENV/bin/python" - "$ROOT/pyproject.toml" "${1:-}" <<'PY'
import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
reqs = project["dependencies"] + project["optional-dependencies"].get(sys.argv[2], [])
print("\n".join(r for r in reqs if not r.startswith("pjsua2-python")))
PY
}

# ensure_build_venv [extra]: $VENV ready for the selected pjsua2 build (the source
# build is built or taken from its cache first).
ensure_build_venv() {
    if [ "$PJSUA2_BUILD" = source ]; then
        "$ROOT/scripts/build-pjsua2"
    else
        ensure_venv "$@"
    fi
}
