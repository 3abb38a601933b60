"""Debian's headless Chromium, driven through its own chromedriver by Selenium (the dashboard's tests and its
benchmark). Never a downloaded browser or driver: scripts/install-tools.sh installs both from Debian."""

from __future__ import annotations

import os
import shutil
from typing import Any


def chromium(width: int = 1400, height: int = 1800) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium fetch a browser or a driver
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (binary and driver):
        raise RuntimeError("Debian's chromium and chromium-driver are missing: run scripts/install-tools.sh")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},{height}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=options)
