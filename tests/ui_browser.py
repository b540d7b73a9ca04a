"""Helpers for driving the UI in a real headless browser (Debian's chromium and chromedriver, by selenium).

- ``chromium()``: a headless chromium that is never a downloaded browser (CHROMIUM, CHROMEDRIVER).
- ``sign_in(browser, url, token)``: through the login page, typing the token, as a person does.
- ``follow(browser, css)`` / ``go(browser, url)``: click a link (or open a URL) and wait for the
  page it leads to; ``wait_css`` waits for an element; ``journey(browser, url, [(name, css), ...])``
  clicks its way through pages, saving each in both schemes.
- ``screenshots(browser, base_url, [(name, path), ...])``: each page at 1280 and 1024 px wide, in
  the light and the dark colour scheme (CDP's ``Emulation.setEmulatedMedia``), saved as
  ``NAME-WIDTH-light.png`` / ``NAME-WIDTH-dark.png`` under ``SHOTS`` (RAYFLOW_UI_SCREENSHOTS,
  default tests/artifacts/; `docs/screenshots/` holds the ones the README shows); it returns
  the pages wider than the window (a page must read without scrolling sideways).
"""

from __future__ import annotations

import base64
import os
import pathlib
import shutil
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

CHROMEDRIVER = shutil.which("chromedriver")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SHOTS = pathlib.Path(os.environ.get("RAYFLOW_UI_SCREENSHOTS") or pathlib.Path(__file__).parent / "artifacts")
WIDTHS = (1280, 1024)
HEIGHT = 800  # the window's height: what a screenshot shows
SCHEMES = ("light", "dark")


@contextmanager
def chromium(console: bool = False) -> Iterator[Any]:
    """A headless chromium driven by chromedriver, closed at the end; with ``console``, it keeps
    its console's messages (``get_log('browser')``)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={WIDTHS[0]},{HEIGHT}",
                "--hide-scrollbars", "--force-color-profile=srgb"):
        options.add_argument(arg)
    options.binary_location = CHROMIUM
    if console:
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def wait_until(condition, timeout: float = 20.0, what: str = "the page") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = condition()
        except Exception:  # noqa: BLE001 - a page being swapped: look again
            found = None
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:.0f} s for {what}")
        time.sleep(0.05)


def wait_css(browser, css: str, timeout: float = 20.0) -> Any:
    """The first element matching ``css``, once there is one."""
    from selenium.webdriver.common.by import By

    return wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, css), timeout, css)[0]


def loaded(browser) -> bool:
    return browser.execute_script("return document.readyState") == "complete"


def go(browser, url: str) -> None:
    """Open ``url`` and wait until it has loaded."""
    browser.get(url)
    wait_until(lambda: loaded(browser), what=url)


def follow(browser, css: str, timeout: float = 20.0) -> str:
    """Click the first element matching ``css`` (a link, a bar of a chart, a summary) and wait
    for the page it leads to (or, for an element that opens in place, for the click); returns
    the URL then."""
    before = browser.current_url
    element = wait_css(browser, css, timeout)
    href = element.get_attribute("href")
    element.click()
    if href and href.split("#")[0] != before.split("#")[0]:
        wait_until(lambda: browser.current_url != before and loaded(browser), timeout, f"the page of {css}")
    return browser.current_url


def sign_in(browser, url: str, token: str, path: str = "/") -> None:
    """Sign in through the login page (asked for ``path``, typing ``token``), back on ``path``."""
    from selenium.webdriver.common.by import By

    browser.delete_all_cookies()
    go(browser, url + path)
    field = wait_css(browser, "form#login input#token")
    field.send_keys(token)
    browser.find_element(By.CSS_SELECTOR, "form#login button[type=submit]").click()
    wait_until(lambda: not browser.find_elements(By.ID, "login") and loaded(browser), what="the page after signing in")


def set_scheme(browser, scheme: str) -> None:
    """The page's ``prefers-color-scheme``: "light" or "dark"."""
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": scheme}]})


def set_width(browser, width: int, height: int = HEIGHT) -> None:
    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
    )


def save(browser, path: pathlib.Path) -> pathlib.Path:
    """What the window shows, as a PNG at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shot = browser.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


def sideways(browser) -> int:
    """How many pixels the page is wider than the window (0: it reads without scrolling sideways)."""
    return int(browser.execute_script("return document.documentElement.scrollWidth - window.innerWidth"))


def screenshots(
    browser, base_url: str, pages: Iterable[tuple[str, str]], widths: Iterable[int] = WIDTHS,
    directory: pathlib.Path | None = None,
) -> dict[str, int]:
    """Each (name, path) of ``pages`` opened at each width and saved in both colour schemes
    (``NAME-WIDTH-SCHEME.png``); returns ``{"NAME-WIDTH": pixels}`` for the pages wider than
    the window.  The browser is left at the first width, in the light scheme."""
    directory = directory or SHOTS
    too_wide = {}
    widths = tuple(widths)
    try:
        for name, path in pages:
            for width in widths:
                set_width(browser, width)
                set_scheme(browser, "light")
                go(browser, base_url + path)
                if (extra := sideways(browser)) > 0:
                    too_wide[f"{name}-{width}"] = extra
                for scheme in SCHEMES:
                    set_scheme(browser, scheme)
                    save(browser, directory / f"{name}-{width}-{scheme}.png")
    finally:
        set_width(browser, widths[0])
        set_scheme(browser, "light")
    return too_wide


def shoot_both(browser, name: str, directory: pathlib.Path | None = None) -> None:
    """The page as it is now, saved as ``NAME-light.png`` and ``NAME-dark.png``."""
    try:
        for scheme in SCHEMES:
            set_scheme(browser, scheme)
            save(browser, (directory or SHOTS) / f"{name}-{scheme}.png")
    finally:
        set_scheme(browser, "light")


def journey(browser, url: str, steps: Iterable[tuple[str, str]], directory: pathlib.Path | None = None) -> list[str]:
    """Open ``url``, then for each (name, css) click the first element matching css (``follow``)
    and save what it shows in both schemes (``shoot_both``); returns the URLs it went through."""
    go(browser, url)
    visited = [browser.current_url]
    for name, css in steps:
        visited.append(follow(browser, css))
        shoot_both(browser, name, directory)
    return visited
