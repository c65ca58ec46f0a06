#!/usr/bin/env bash
# Build the Debian package: dist/poolwatch_VERSION_ARCH.deb (VERSION from
# daemon/poolwatch/__init__.py, which debian/changelog must match). As root, installs what the build needs with apt first, like
# bootstrap.sh. The build runs with Debian's tools (dpkg-buildpackage, debhelper, dh-virtualenv)
# in a copy of this tree, so the checkout keeps its .venv and the parent folder stays clean; pip
# fetches poolwatch's dependencies from the indexes it is configured with. lintian checks the
# result and the build fails on any tag that debian/poolwatch.lintian-overrides does not explain.
# Install the package on a host with `apt install ./poolwatch_VERSION_ARCH.deb`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

die() {
  echo "package: $*" >&2
  exit 1
}

# --- build dependencies ---------------------------------------------------------------------
# Those of debian/control, plus the tools that drive the build and check its result.
BUILD_PACKAGES=(build-essential dpkg-dev fakeroot debhelper dh-virtualenv libvirt-dev pkg-config
  python3 python3-dev python3-venv lintian)
command -v dpkg-query >/dev/null || die "this script expects Debian 12 (no dpkg-query)"
missing=()
for pkg in "${BUILD_PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "package: missing apt packages: ${missing[*]}; install them with:" >&2
    echo "sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${BUILD_PACKAGES[*]}" >&2
    exit 1
  fi
  echo "package: installing apt packages: ${missing[*]}"
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${BUILD_PACKAGES[@]}"
fi

# --- versions -------------------------------------------------------------------------------
version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' daemon/poolwatch/__init__.py)
deb_version=$(dpkg-parsechangelog -S Version)
[ "$version" = "$deb_version" ] || die "daemon/poolwatch/__init__.py says $version but debian/changelog $deb_version: add a debian/changelog entry for $version (e.g. dch -v $version)"
arch=$(dpkg --print-architecture)

# --- build ----------------------------------------------------------------------------------
# dpkg-buildpackage writes its results next to the source tree: build in a copy, inside a
# private folder, without the checkout's virtualenv, caches and earlier results.
work=$(mktemp -d "${TMPDIR:-/tmp}/poolwatch-package.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir "$work/poolwatch-$version"
tar -c --exclude=./.git --exclude=./.venv --exclude=./dist --exclude='__pycache__' \
  --exclude=./.mypy_cache --exclude=./.pytest_cache --exclude=./.ruff_cache . |
  tar -x -C "$work/poolwatch-$version"
echo "package: building poolwatch $version for $arch in $work (log: dist/build.log)"
mkdir -p dist
if ! (cd "$work/poolwatch-$version" && dpkg-buildpackage -us -uc -b) >dist/build.log 2>&1; then
  tail -n 40 dist/build.log >&2
  die "dpkg-buildpackage failed, see dist/build.log"
fi
deb=poolwatch_${version}_${arch}.deb
mv "$work/$deb" dist/

# --- check ----------------------------------------------------------------------------------
# Every tag lintian still reports is either fixed or explained in debian/poolwatch.lintian-overrides.
lintian --display-info --fail-on error,warning,info "dist/$deb" | tee dist/lintian.log ||
  die "lintian reports tags (above) that debian/poolwatch.lintian-overrides does not explain"
echo "package: dist/$deb"
