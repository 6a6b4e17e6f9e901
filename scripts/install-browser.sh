#!/bin/sh
# Headless Chromium + chromedriver (Debian/Ubuntu packages) and selenium, for the report's browser
# test (tests/test_report.py) and scripts/screenshot.py. Installs only what is missing; needs root
# or sudo for apt-get, and otherwise prints what to run.
set -eu

have() { command -v "$1" >/dev/null 2>&1; }

browser=""
for name in chromium chromium-browser google-chrome google-chrome-stable; do
    if have "$name"; then browser="$name"; break; fi
done

if [ -n "$browser" ] && have chromedriver; then
    echo "browser: $(command -v "$browser"), driver: $(command -v chromedriver)"
else
    if [ "$(id -u)" -eq 0 ]; then
        sudo=""
    elif have sudo && sudo -n true 2>/dev/null; then
        sudo="sudo"
    else
        echo "Chromium and chromedriver are missing and this script cannot install them (not root, no sudo)."
        echo "Ask an administrator to run:  apt-get update && apt-get install -y chromium chromium-driver"
        echo "Without them the browser test in tests/test_report.py is skipped."
        exit 0
    fi
    if ! have apt-get; then
        echo "no apt-get here: install Chromium and a matching chromedriver with your package manager;"
        echo "without them the browser test in tests/test_report.py is skipped."
        exit 0
    fi
    $sudo apt-get update
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y chromium chromium-driver
fi

python=${PYTHON:-python}
if "$python" -c "import selenium" 2>/dev/null; then
    echo "selenium: $("$python" -c 'import selenium; print(selenium.__version__)')"
else
    "$python" -m pip install "selenium>=4.20"
fi
