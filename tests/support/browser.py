"""A real headless Chromium (Debian's chromium and chromedriver, driven by selenium) for the dashboard's tests.

What a test checks is what a person sees: computed colours and texts of the page. The page's
`window.pidaemonDashboard` hook and its data-* attributes only tell a test when to look.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path
from typing import Any, Callable

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio")
# Not PIDAEMON_*: every PIDAEMON_ variable is a configuration override for the nodes a test starts.
SCREENSHOTS_ENV = "DASHBOARD_SCREENSHOTS"


def chromium_missing() -> str | None:
    """Why Chromium cannot run here (for a skip), or None."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not (Path(path).exists() or shutil.which(Path(path).name)):
            return f"{path} is missing: apt-get install {package} (scripts/test installs it)"
    return None


def start_chromium(width: int = 1600, height: int = 1000, profile_dir: Path | None = None):
    """A headless Chromium whose page (the viewport, not the window) is width x height CSS pixels."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--window-size={width},{height}")
    if profile_dir is not None:
        options.add_argument(f"--user-data-dir={profile_dir}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver_path = CHROMEDRIVER if Path(CHROMEDRIVER).exists() else shutil.which("chromedriver")
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    set_viewport(driver, width, height)
    return driver


def set_viewport(driver, width: int, height: int) -> None:
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})


def wait_for(condition: Callable[[], Any], timeout: float = 10.0, what: str = "condition", interval: float = 0.05):
    """Poll `condition()` until it is truthy (and return it), or raise TimeoutError: a bound on failure."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = condition()
            if value:
                return value
        except Exception as error:  # an element that is being redrawn; retried until the deadline
            last_error = error
        if time.monotonic() > deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            raise TimeoutError(f"{what}: not met within {timeout} s{detail}")
        time.sleep(interval)


def rgb(css: str) -> tuple[int, int, int]:
    """(r, g, b) of a computed CSS colour such as 'rgb(0, 158, 115)' or 'rgba(0, 158, 115, 1)'."""
    match = re.fullmatch(r"rgba?\((\d+),\s*(\d+),\s*(\d+)(?:,\s*[\d.]+)?\)", css.strip())
    if not match:
        raise ValueError(f"not an rgb() colour: {css!r}")
    return tuple(int(part) for part in match.groups())


class DashboardPage:
    """The dashboard open in a browser: what the page shows, read the way a person would see it."""

    def __init__(self, driver, url: str, screenshot_dir: Path):
        self.driver, self.url, self.screenshot_dir = driver, url, Path(screenshot_dir)

    def open(self, timeout: float = 20.0) -> "DashboardPage":
        self.driver.get(self.url)
        self.wait_live(timeout)
        return self

    def hook(self) -> dict:
        return self.driver.execute_script("return window.pidaemonDashboard || {}")

    def wait_live(self, timeout: float = 20.0) -> dict:
        return wait_for(lambda: self.hook().get("connected") and self.hook(), timeout, "the page shows a live snapshot")

    def js(self, script: str, *args):
        return self.driver.execute_script(script, *args)

    def cell(self, node_id: str):
        from selenium.webdriver.common.by import By
        return self.driver.find_element(By.CSS_SELECTOR, f'.cell[data-node="{node_id}"]')

    def cells(self) -> dict[str, dict]:
        """Every node's cell: {id: {"place", "state", "reading", "in_tray"}}."""
        return self.js("""
            const out = {};
            for (const c of document.querySelectorAll('.cell[data-node]')) out[c.dataset.node] = {
                place: c.dataset.place || null, state: c.dataset.state, reading: c.dataset.reading,
                in_tray: !!c.closest('#tray')};
            return out;""")

    def background(self, element) -> tuple[int, int, int]:
        return rgb(self.js("return getComputedStyle(arguments[0]).backgroundColor", element))

    def legend_colour(self, name: str) -> tuple[int, int, int]:
        return rgb(self.js("return getComputedStyle(document.querySelector("
                           "'#legend [data-legend=\"' + arguments[0] + '\"] .swatch')).backgroundColor", name))

    def lamp_colours(self) -> list[tuple[int, int, int]]:
        return [rgb(c) for c in self.js("return [...document.querySelectorAll('#lamp-pixels [data-pixel]')]"
                                        ".map(p => getComputedStyle(p).backgroundColor)")]

    def text(self, selector: str) -> str:
        return self.js("const e = document.querySelector(arguments[0]); return e ? e.innerText : ''", selector)

    def visible(self, selector: str) -> bool:
        return bool(self.js("const e = document.querySelector(arguments[0]);"
                            "return !!e && !e.hidden && e.getClientRects().length > 0", selector))

    def screenshot(self, name: str) -> Path:
        """The page as a PNG in the test's directory, and in $DASHBOARD_SCREENSHOTS when set."""
        self.screenshot_dir.mkdir(parents=True, exist_ok=True)
        path = self.screenshot_dir / f"{name}.png"
        self.driver.save_screenshot(str(path))
        if os.environ.get(SCREENSHOTS_ENV):
            extra = Path(os.environ[SCREENSHOTS_ENV])
            extra.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, extra / path.name)
        return path

    def console_errors(self) -> list[str]:
        return [entry["message"] for entry in self.driver.get_log("browser") if entry.get("level") == "SEVERE"]
