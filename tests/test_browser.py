"""The shop page in headless Chromium: enter a customer, see 12 cards, unlike one, reload, gone."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from fashionrec.data.ingest import ingest

from .conftest import BUNDLED
from .test_serve import _free_port, publish_all

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER),
    reason="needs Debian's chromium and chromium-driver (make test installs them as root)",
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("browser")
    ingest(BUNDLED, root / "ds")
    publish_all(root / "ds", root / "registry", ["repurchase"], "repurchase")
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fashionrec.cli",
            "-q",
            "serve",
            str(root / "registry"),
            "--dataset",
            str(root / "ds"),
            "--port",
            str(port),
            "--store",
            str(root / "fb.db"),
        ],
        env={**os.environ, "FASHIONREC_API_KEY": "k"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(150):
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def test_unlike_in_the_browser(server: str, tmp_path: Path) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1300,1100",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        opts.add_argument(flag)
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    def favourites(after: Any = None) -> list[Any]:
        """The cards of the page that replaced `after` (form posts return before it loads)."""
        wait = WebDriverWait(driver, 30)
        if after is not None:
            wait.until(ec.staleness_of(after))
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#favourites .card"))
        return driver.find_elements(By.CSS_SELECTOR, "#favourites .card")

    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    try:
        driver.get(server)
        box = driver.find_element(By.NAME, "customer_id")
        box.send_keys("13085")
        box.submit()
        cards = favourites(after=box)
        assert len(cards) == 12
        first = cards[0].get_attribute("data-article")
        cards[0].find_element(By.CSS_SELECTOR, "button.unlike").click()
        favourites(after=cards[0])  # the post-redirect-get page
        page = driver.find_element(By.TAG_NAME, "html")
        driver.refresh()
        shown = [c.get_attribute("data-article") for c in favourites(after=page)]
        assert len(shown) == 12 and first not in shown
        out = Path(os.environ.get("FASHIONREC_SCREENSHOTS", tmp_path))
        out.mkdir(parents=True, exist_ok=True)
        assert driver.save_screenshot(str(out / "customer_page.png"))
    finally:
        driver.quit()
