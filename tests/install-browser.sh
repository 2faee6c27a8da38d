#!/usr/bin/env bash
# Installs the headless browser the dashboard tests drive (tests/tests/dashboard/): Debian's
# `chromium` and `chromium-driver` (WebDriver). Idempotent; prints a SKIP line and exits 0 when
# the browser cannot be installed (no root, no apt, no network), so the tests skip with a clear
# line instead of failing.
set -uo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "SKIP install-browser: no apt-get here; install chromium and chromedriver yourself to run the dashboard browser tests"
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "SKIP install-browser: not root and no password-less sudo; run: apt-get install chromium chromium-driver"
        exit 0
    fi
fi
export DEBIAN_FRONTEND=noninteractive
# Other package installs may hold the dpkg lock for a while (CI images, parallel scripts).
APT=(-o DPkg::Lock::Timeout=600 -y -q)
if ! $SUDO apt-get "${APT[@]}" install --no-install-recommends chromium chromium-driver >/tmp/install-browser.log 2>&1; then
    $SUDO apt-get -o DPkg::Lock::Timeout=600 -q update >>/tmp/install-browser.log 2>&1 || true
    if ! $SUDO apt-get "${APT[@]}" install --no-install-recommends chromium chromium-driver >>/tmp/install-browser.log 2>&1; then
        echo "SKIP install-browser: apt-get install chromium chromium-driver failed (see /tmp/install-browser.log)"
        exit 0
    fi
fi
command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
    echo "SKIP install-browser: chromium or chromedriver missing after the install"
exit 0
