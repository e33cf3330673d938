#!/bin/sh
# Debian's Chromium for the studio's browser tests (tests/test_studio_browser.py), which
# drive it with Playwright for Python: Playwright's own browser downloads come from a CDN
# this machine may not reach, Debian's archive is always there. A Korean font comes along
# (fonts-nanum, 10 MB) so the Korean page's screenshot shows letters, not boxes.
# Installs only what is missing; it needs root and apt-get. When it cannot install, it says
# so and exits 0: the browser tests then skip with that reason, or fail under CI=true.
set -u
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
packages=""
[ -x "$CHROMIUM" ] || packages="chromium"
if command -v fc-list >/dev/null 2>&1 && [ -z "$(fc-list :lang=ko 2>/dev/null)" ]; then
	packages="$packages fonts-nanum"
fi
[ -z "$packages" ] && exit 0

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
	echo "install_chromium: not root on Debian, so not installing:$packages;" \
		"the browser tests need $CHROMIUM: sudo apt-get install chromium" >&2
	exit 0
fi

export DEBIAN_FRONTEND=noninteractive
install() {
	# shellcheck disable=SC2086 # a list of package names
	apt-get install -y -q --no-install-recommends $packages </dev/null
}
echo "Installing Debian's$packages for the browser tests (once)"
# the package lists may be stale or missing on a fresh machine: refresh them and try again
install || { apt-get update -q </dev/null && install; } || {
	echo "install_chromium: apt-get could not install$packages;" \
		"the browser tests need $CHROMIUM" >&2
}
exit 0
