#!/usr/bin/env bash
# Prepare this checkout to run stacklet on Debian 12, as root. Idempotent and fast when re-run:
# system packages are installed only when one is missing, the virtualenv only when absent, and
# pip only runs again when pyproject.toml or the requested extras changed.
#
#   scripts/install.sh [EXTRAS]      EXTRAS: clients (default) or test, as in pyproject.toml
set -euo pipefail

cd "$(dirname "$0")/.."
EXTRAS="${1:-clients}"
VENV="${VENV:-.venv}"

# Needed now: Python and a compiler for wheels without binaries; the rest serves the dataplane.
PACKAGES=(python3 python3-venv python3-dev gcc iproute2 psmisc curl
          openvswitch-switch dnsmasq-base dnsmasq-utils iptables ethtool iperf3 netcat-openbsd
          iputils-ping python3-openvswitch udhcpc haproxy conntrack iputils-arping radvd
          graphviz dropbear-bin
          # the qemu instance driver and its guest images (scripts/build-images)
          qemu-system-x86 qemu-utils genisoimage debootstrap openssh-client
          # noVNC, served by the server's console proxy (/vnc/vnc_lite.html)
          novnc)
# The dashboard's browser tests (tests/api/test_dashboard.py) drive Debian's headless Chromium.
# The test suite also starts PostgreSQL, MariaDB and RabbitMQ servers of its own from these packages'
# binaries (data in a temp dir, a free port; tests/database_backends.py). It never uses their
# system-wide instances (not even started here without systemd, see policy-rc.d below).
if [ "$EXTRAS" = test ]; then
    PACKAGES+=(chromium chromium-driver postgresql mariadb-server rabbitmq-server)
fi

log() { printf '%s\n' "install: $*"; }

installed() {
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = "installed" ]
}

missing=()
for pkg in "${PACKAGES[@]}"; do
    installed "$pkg" || missing+=("$pkg")
done

if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "install: missing Debian packages: ${missing[*]}; run as root or install them" >&2
        exit 1
    fi
    log "apt-get install ${missing[*]}"
    # Without systemd (containers), package scripts cannot start services; tell them not to try.
    policy=/usr/sbin/policy-rc.d
    if [ ! -d /run/systemd/system ] && [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy"
        chmod 755 "$policy"
        trap 'rm -f "$policy"' EXIT
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The qemu driver's guest images, built from Debian's packages into /var/cache/stacklet/images
# once (a cached build is reused at once): the tiny one for `up` (~20 s the first time), and
# for the tests also the cloud-init one (~4 min the first time).
if [ "$(id -u)" = 0 ]; then
    if [ "$EXTRAS" = test ]; then
        scripts/build-images all >/dev/null
    elif ! scripts/build-images tiny >/dev/null; then
        log "warning: the tiny guest image was not built; up will try again"
    fi
fi

if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV"
    python3 -m venv "$VENV"
fi

# python-ovs from PyPI parses OVSDB's JSON in pure Python (1.4 s to load a node with 1,000
# ports); Debian's python3-openvswitch carries the C parser. Lend it to the venv's copy when the
# interpreters share an ABI (same `ovs._json` API in both).
link_ovs_json() {
    local suffix site src
    suffix="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')"
    site="$("$VENV/bin/python" -c 'import ovs, os; print(os.path.dirname(ovs.__file__))' 2>/dev/null)" || return 0
    src="/usr/lib/python3/dist-packages/ovs/_json$suffix"
    if [ -f "$src" ] && [ ! -e "$site/_json$suffix" ]; then
        ln -s "$src" "$site/_json$suffix"
        "$VENV/bin/python" -c 'import ovs._json' 2>/dev/null || rm -f "$site/_json$suffix"
    fi
}

stamp="$VENV/.stacklet-installed-$EXTRAS"
want="$(sha256sum pyproject.toml | cut -d' ' -f1) $EXTRAS"
if [ -x "$VENV/bin/stacklet" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    link_ovs_json
    exit 0
fi
log "pip install -e '.[$EXTRAS]'"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[$EXTRAS]"
link_ovs_json
echo "$want" > "$stamp"
