#!/usr/bin/env bash
# Prepares a machine for greenbridge: the Debian packages it needs and a Python virtual environment in .venv.
# Sourced by deploy/run.sh and tests/run.sh; safe to run again (it only installs what is missing).
set -euo pipefail

GB_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
GB_VENV="${GB_VENV:-$GB_ROOT/.venv}"

gb_as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo "$@"; else
        echo "greenbridge setup: need root (or sudo) to run: $*" >&2; return 1; fi
}

# Debian packages: name of the package, then a command that proves it is installed.
gb_apt_packages() {
    local missing=()
    while [ $# -gt 1 ]; do
        local pkg="$1" probe="$2"; shift 2
        if ! sh -c "$probe" >/dev/null 2>&1; then missing+=("$pkg"); fi
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "greenbridge setup: installing Debian packages: ${missing[*]}" >&2
        gb_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        gb_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
    fi
}

gb_setup() {
    local extras="${1:-}"
    gb_apt_packages \
        python3 "command -v python3" \
        python3-venv "python3 -c 'import ensurepip, venv'" \
        tzdata "test -d /usr/share/zoneinfo" \
        redis-server "command -v redis-server"  # `greenbridge serve` runs its own on a private socket
    case ",$extras," in
        *,test,*)
            # Real servers and a real browser for the test suite (tests/servers.py starts them on 127.0.0.1).
            local had_nginx=yes
            [ -x /usr/sbin/nginx ] || had_nginx=no
            gb_apt_packages \
                postgresql "ls /usr/lib/postgresql/*/bin/initdb" \
                chromium "command -v chromium" \
                redis-server "command -v redis-server" \
                openssh-server "test -x /usr/sbin/sshd" \
                nginx "test -x /usr/sbin/nginx"  # deploy/nginx checked with nginx -t, and the scale-out test's proxy
            if [ "$had_nginx" = no ] && [ -d /run/systemd/system ]; then
                # The tests run nginx themselves on loopback ports; the Debian service it came with is not wanted.
                gb_as_root systemctl disable --now nginx >/dev/null 2>&1 || true
            fi
            ;;
    esac
    python3 - <<'PY' || { echo "greenbridge needs Python >= 3.11" >&2; return 1; }
import sys
sys.exit(0 if sys.version_info >= (3, 11) else 1)
PY
    if [ ! -x "$GB_VENV/bin/python" ]; then
        python3 -m venv "$GB_VENV"
    fi
    local spec="$GB_ROOT"
    [ -n "$extras" ] && spec="$GB_ROOT[$extras]"
    # Reinstall only when the project metadata changed since the last install.
    local stamp="$GB_VENV/.greenbridge-installed"
    local want
    want="$(sha256sum "$GB_ROOT/pyproject.toml" | cut -d' ' -f1)-$extras"
    local have=""
    [ -f "$stamp" ] && have="$(cat "$stamp")"
    # An install with the test extras also serves the main job (deploy/run.sh after tests/run.sh reinstalls nothing).
    if [ "$have" != "$want" ] && ! { [ -z "$extras" ] && [ "$have" = "${want}test" ]; }; then
        "$GB_VENV/bin/python" -m pip install -q --upgrade pip >&2
        "$GB_VENV/bin/python" -m pip install -q -e "$spec" >&2
        echo "$want" > "$stamp"
    fi
}
