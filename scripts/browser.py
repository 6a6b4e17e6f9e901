"""Headless Chromium for scripts and tests (selenium): render a report, take a screenshot.

Not part of the fakedet package: ``scripts/screenshot.py`` and ``tests/test_report.py`` use it.
"""
from __future__ import annotations

from pathlib import Path

CHROMIUM_BINARIES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--hide-scrollbars")


class BrowserUnavailable(RuntimeError):
    """No headless Chromium, chromedriver or selenium on this machine."""


def find_chromium() -> tuple[str, str]:
    """(browser binary, chromedriver) found on PATH; BrowserUnavailable with the fix otherwise."""
    import shutil

    binary = next((found for name in CHROMIUM_BINARIES if (found := shutil.which(name))), None)
    driver = shutil.which("chromedriver")
    if binary is None or driver is None:
        missing = " and ".join(n for n, v in (("chromium", binary), ("chromedriver", driver)) if v is None)
        raise BrowserUnavailable(f"no {missing} on PATH; install them with scripts/install-browser.sh")
    return binary, driver


def chromium(width: int = 1300, height: int = 900):
    """A headless Chromium WebDriver (fresh profile, browser console logged); call ``.quit()``."""
    import tempfile

    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        raise BrowserUnavailable("selenium is not installed: pip install selenium") from None
    binary, driver = find_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    profile = tempfile.mkdtemp(prefix="fakedet-chromium-")
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    browser.profile_dir = profile  # removed by the caller's cleanup (see screenshot)
    return browser


def screenshot(page: str | Path, png: str | Path, width: int = 1300, max_height: int = 30000) -> Path:
    """Render an HTML file in headless Chromium and save a full-page PNG screenshot."""
    import shutil

    browser = chromium(width)
    try:
        browser.get(Path(page).resolve().as_uri())
        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.set_window_size(width, min(int(height) + 40, max_height))
        Path(png).parent.mkdir(parents=True, exist_ok=True)
        if not browser.save_screenshot(str(png)):
            raise BrowserUnavailable(f"Chromium could not write {png}")
    finally:
        browser.quit()
        shutil.rmtree(browser.profile_dir, ignore_errors=True)
    return Path(png)
