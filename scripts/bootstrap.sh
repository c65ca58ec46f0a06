#!/usr/bin/env bash
# Make a Debian 12 machine ready to build and run poolwatch (`bootstrap.sh`) or to test it
# (`bootstrap.sh --test`): apt packages, the libvirt-qemu user a real libvirtd insists on, and .venv
# with the project and its dev tools.
# Safe to run again; it only does work when something is missing or pyproject.toml changed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# libvirt-python builds from source (libvirt-dev, pkg-config, gcc, python3-dev); the demo needs no
# more, since libvirt's test driver lives in the library.
APT_PACKAGES=(libvirt-dev pkg-config gcc python3-venv python3-dev)
# The integration tier runs a real libvirtd (libvirt-daemon, virsh) on loop devices (e2fsprogs,
# util-linux, mount); the e2e tier a real Prometheus and promtool (prometheus), a real
# Alertmanager and amtool (prometheus-alertmanager) and headless Chromium; the systemd unit is
# checked with systemd-analyze (systemd), the polkit rule evaluated with node (nodejs), and the
# TLS tests make their certificates with openssl; the fast-path tests make qcow2 images with
# qemu-img (qemu-utils). The real-guest tests boot a QEMU guest (qemu-system-x86, TCG) from a
# busybox initramfs (busybox-static) and a Debian kernel they download (not install) with
# apt-get; depmod (kmod) indexes its modules. The package tier builds the .deb
# (scripts/package.sh: debhelper, dh-virtualenv, lintian...) and boots a Debian 12 root made by
# debootstrap with systemd-nspawn (systemd-container).
TEST_PACKAGES=(libvirt-daemon libvirt-clients e2fsprogs util-linux mount prometheus
  prometheus-alertmanager systemd qemu-utils qemu-system-x86 busybox-static kmod chromium nodejs
  openssl build-essential dpkg-dev fakeroot debhelper dh-virtualenv lintian debootstrap
  systemd-container)
if [ "${1:-}" = "--test" ]; then
  APT_PACKAGES+=("${TEST_PACKAGES[@]}")
fi
VENV=.venv
STAMP=$VENV/.poolwatch-installed

die() {
  echo "bootstrap: $*" >&2
  exit 1
}

# --- apt packages -------------------------------------------------------------------------------
command -v dpkg-query >/dev/null || die "this script expects Debian 12 (no dpkg-query); install the equivalents of: ${APT_PACKAGES[*]}"
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "bootstrap: missing apt packages: ${missing[*]}; install them with:" >&2
    echo "sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${APT_PACKAGES[*]}" >&2
    exit 1
  fi
  echo "bootstrap: installing apt packages: ${missing[*]}"
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${APT_PACKAGES[@]}"
  # Debian starts a system-wide Prometheus on :9090 and Alertmanager on :9093 when it installs
  # the packages; the tests run their own, so switch off the ones we just caused (never one that
  # was there before).
  if [ -d /run/systemd/system ]; then
    if [[ " ${missing[*]} " == *" prometheus "* ]]; then
      systemctl disable --now prometheus.service || true
    fi
    if [[ " ${missing[*]} " == *" prometheus-alertmanager "* ]]; then
      systemctl disable --now prometheus-alertmanager.service || true
    fi
  fi
fi

# --- the user libvirtd's QEMU driver needs (libvirt-daemon-system would create it) --------------
if ! getent passwd libvirt-qemu >/dev/null; then
  if [ "$(id -u)" -eq 0 ]; then
    useradd -r -s /usr/sbin/nologin libvirt-qemu
  else
    echo "bootstrap: note: user libvirt-qemu is missing; the integration tests (run as root) create it" >&2
  fi
fi

# --- Python -------------------------------------------------------------------------------------
# Debian's own python3, the one users of the package run, not whichever python3 comes first on
# PATH (a pyenv build, say); PYTHON=/path/to/python3 chooses another.
if [ -n "${PYTHON:-}" ]; then
  PY=$PYTHON
elif [ -x /usr/bin/python3 ]; then
  PY=/usr/bin/python3
else
  PY=$(command -v python3) || die "python3 is not on PATH (or set PYTHON=/path/to/python3)"
fi
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
  die "poolwatch needs Python >= 3.11, but $PY is $("$PY" -V 2>&1)"

# A .venv made by another interpreter (or one that is gone) is made again: the tests must run on
# the Python that was chosen, not on whatever made .venv once.
interpreter='import sys; print(sys.base_prefix, sys.version)'
if [ "$("$VENV/bin/python" -c "$interpreter" 2>/dev/null)" != "$("$PY" -c "$interpreter")" ]; then
  echo "bootstrap: creating $VENV with $PY ($("$PY" -V 2>&1))"
  "$PY" -m venv --clear "$VENV"
  rm -f "$STAMP"
fi

if [ ! -e "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ] || [ scripts/bootstrap.sh -nt "$STAMP" ]; then
  echo "bootstrap: installing poolwatch and its dev dependency group into $VENV"
  # Debian 12's pip (23.0) predates dependency groups (pip >= 25.1).
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --upgrade "pip>=25.1"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -e . --group dev
  touch "$STAMP"
fi
echo "bootstrap: ready ($VENV/bin/python is $("$VENV/bin/python" -V 2>&1))"
