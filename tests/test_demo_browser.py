"""The demo in a real browser: JupyterLab served here, headless Chromium (Selenium) runs a notebook that opens the app
as 17_demo does (`loading=True`) and keeps the kernel busy, as Run All's later cells do. A click on *segment* meanwhile
must find "still loading" on the screen (it was: nothing, for about 76 s), and the click is answered once the last cell
calls `ready()`. Skipped without Chromium, chromedriver, Selenium or JupyterLab."""

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from test_site import chromium

BUSY_S = 20  # how long the notebook's next cell keeps the kernel busy after the app is shown


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _notebook(data: Path) -> dict:
    cells = [
        "import time\nimport torch\nfrom ris_nb.demo import DemoApp\n\ntorch.set_num_threads(1)\n"
        f"app = DemoApp({str(data)!r}, {str(data / 'runs')!r}, loading=True)\napp.widget",
        f"time.sleep({BUSY_S})  # the cells below the app, still running",
        "app.ready()",
    ]
    return {
        "cells": [
            {"cell_type": "code", "id": f"c{i}", "metadata": {}, "execution_count": None, "outputs": [], "source": s}
            for i, s in enumerate(cells)
        ],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }


@pytest.fixture
def lab(shaperefs_data, tmp_path):
    "A JupyterLab server (no token) whose root holds demo.ipynb; yields its URL."
    jupyter = Path(sys.executable).parent / "jupyter"
    if not jupyter.exists():
        pytest.skip("no jupyter in this environment")
    (tmp_path / "demo.ipynb").write_text(json.dumps(_notebook(shaperefs_data(40, 3, 64))))
    port = _free_port()
    cmd = [str(jupyter), "lab", "--no-browser", "--allow-root", f"--port={port}", "--ServerApp.token="]
    cmd += ["--ServerApp.password=", f"--ServerApp.root_dir={tmp_path}", "--LabApp.news_url=None"]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/api/status", timeout=2)
                break
            except OSError:
                time.sleep(1)
        else:
            pytest.fail("JupyterLab did not start in 120 s")
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_click_during_run_all_sees_still_loading_then_is_answered(lab, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    d = chromium(tmp_path / "chromium")  # test_site's headless Chromium
    if d is None:
        pytest.skip("no Chromium, chromedriver or Selenium")
    try:
        d.get(f"{lab}/lab/tree/demo.ipynb")
        wait = WebDriverWait(d, 180, poll_frequency=0.5)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell"))
        wait.until(lambda d: "Idle" in d.find_element(By.CSS_SELECTOR, ".jp-StatusBar-Widget, #jp-main-statusbar").text)
        d.find_element(By.XPATH, "//div[contains(@class,'lm-MenuBar-itemLabel') and text()='Run']").click()
        d.find_element(By.XPATH, "//div[contains(@class,'lm-Menu-itemLabel') and text()='Run All Cells']").click()
        wait.until(lambda d: "still loading" in d.find_element(By.CSS_SELECTOR, ".jp-Notebook").text)
        d.find_element(By.XPATH, "//button[normalize-space()='segment']").click()  # while the kernel is busy
        text = d.find_element(By.CSS_SELECTOR, ".jp-Notebook").text
        assert "still loading" in text and "of the image" not in text, text[-800:]
        # the last cell calls ready(); then the queued click segments
        WebDriverWait(d, BUSY_S + 180, poll_frequency=0.5).until(
            lambda d: (
                "of the image" in (t := d.find_element(By.CSS_SELECTOR, ".jp-Notebook").text)
                and "still loading" not in t
            )
        )
    finally:
        d.quit()
