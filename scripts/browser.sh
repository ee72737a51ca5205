#!/usr/bin/env bash
# The headless browser for tests/acceptance/test_browser.py: Debian's Chromium at /usr/bin/chromium,
# installed with apt-get when it is missing (Playwright drives it; it never downloads a browser).
# Under CI=true a browser that is still missing is an error, never a skip.
set -u
CHROMIUM="${TIDINGS_TEST_CHROMIUM:-/usr/bin/chromium}"

if [ ! -x "$CHROMIUM" ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "browser: installing chromium"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q chromium >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; } \
      || echo "browser: could not install chromium"
  fi
fi
if [ -x "$CHROMIUM" ]; then
  echo "browser: chromium is installed at $CHROMIUM ($("$CHROMIUM" --version 2>/dev/null | head -1))"
else
  echo "browser: chromium is NOT installed at $CHROMIUM"
  if [ "${CI:-}" = "true" ]; then
    echo "browser: CI=true and the browser is missing" >&2
    exit 1
  fi
fi
exit 0
