"""A real headless Chromium driven by Selenium, for the dashboard's tests.

``PLAT_UI_SCREENSHOTS=<folder>`` makes :func:`screenshot` save the pages it is
given there (docs/img/dashboard-*.png come from it); without it nothing is saved.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

CHROMEDRIVER = "/usr/bin/chromedriver"
WIDTH, HEIGHT = 1280, 800
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    f"--window-size={WIDTH},{HEIGHT}",
)
T = TypeVar("T")
WebDriver = webdriver.Chrome


@contextmanager
def chromium() -> Iterator[WebDriver]:
    """A fresh browser (its own profile in a temporary folder), quit afterwards."""
    with tempfile.TemporaryDirectory(prefix="plat-chromium-") as profile:
        options = webdriver.ChromeOptions()
        for flag in FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={profile}")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        try:
            # The viewport itself 1280x800, whatever the window's frame takes.
            driver.execute_cdp_cmd(
                "Emulation.setDeviceMetricsOverride",
                {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False},
            )
            yield driver
        finally:
            driver.quit()


def console(driver: WebDriver) -> list[dict[str, Any]]:
    """The browser's console entries since the last call (reading them clears them)."""
    entries: list[dict[str, Any]] = driver.get_log("browser")
    return entries


def severe(entries: list[dict[str, Any]]) -> list[str]:
    return [str(e["message"]) for e in entries if e["level"] == "SEVERE"]


def wait(driver: WebDriver, condition: Callable[[WebDriver], T | None], timeout: float = 15) -> T:
    """condition's first truthy answer within timeout; otherwise an AssertionError
    that shows the page's text (what the user would have seen)."""
    try:
        found = WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)
        assert found is not None  # until() answers only a truthy value
        return found
    except Exception as exc:
        body = driver.find_element("tag name", "body").text[-2000:]
        raise AssertionError(f"waited {timeout} s in vain; the page shows:\n{body}") from exc


def text_of(driver: WebDriver, css: str) -> str:
    found = driver.find_elements("css selector", css)
    return found[0].text if found else ""


def elements(driver: WebDriver, css: str) -> list[WebElement]:
    return driver.find_elements("css selector", css)


def screenshot(driver: WebDriver, name: str) -> None:
    folder = os.environ.get("PLAT_UI_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(folder) / f"dashboard-{name}.png"))
