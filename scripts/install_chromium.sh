#!/bin/sh
# Debian's Chromium for the studio's browser tests (tests/test_studio_browser.py), which
# drive it with Playwright for Python: Playwright's own browser downloads come from a CDN
# this machine may not reach, Debian's archive is always there. Installs only when
# /usr/bin/chromium is missing; it needs root and apt-get. When it cannot install, it says
# so and exits 0: the browser tests then skip with that reason, or fail under CI=true.
set -u
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
[ -x "$CHROMIUM" ] && exit 0

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
	echo "install_chromium: $CHROMIUM is missing and this is not root on Debian;" \
		"the browser tests need it: sudo apt-get install chromium" >&2
	exit 0
fi

export DEBIAN_FRONTEND=noninteractive
install() {
	apt-get install -y -q --no-install-recommends chromium </dev/null
}
echo "Installing Debian's chromium for the browser tests (once)"
# the package lists may be stale or missing on a fresh machine: refresh them and try again
install || { apt-get update -q </dev/null && install; } || {
	echo "install_chromium: apt-get could not install chromium;" \
		"the browser tests need $CHROMIUM" >&2
}
exit 0
