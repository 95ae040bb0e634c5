"""What a reader sees, in a real browser (issue 14): JupyterLab runs the workbook's notebooks through
its UI, and the built book shows its pages and images.

Headless Chromium from Debian (``chromium`` + ``chromium-driver``) driven by selenium; nothing
downloads a browser. Deselected by default (pyproject: ``-m 'not browser'``); ``make browser-test``
installs Chromium where it can and runs ``pytest -m browser tests/test_browser.py``. Screenshots are
saved in the test's temporary folder (printed with ``-s``, kept by pytest for the last runs).
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from jlml_lib import book

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("JLML_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("JLML_CHROMEDRIVER", "/usr/bin/chromedriver")
MISSING = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
LAB_NOTEBOOKS = ("00_setup", "02_model")
RUN_TIMEOUT_S = 420  # 02 counts the FLOPs of five networks at 224×224 on a shared CPU

pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(900),
    pytest.mark.skipif(bool(MISSING), reason=f"headless Chromium not found ({', '.join(MISSING)}): `make "
                       "browser-test` installs Debian's chromium and chromium-driver, or set JLML_CHROMIUM / "
                       "JLML_CHROMEDRIVER"),
]

# every code cell has a number, and what JupyterLab rendered as stderr or an error (tracebacks use the
# same renderer), and every image of an output area with its size once decoded
_STATE_JS = """
const cells = [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-CodeCell')];
return cells.map(c => ({
  prompt: (c.querySelector('.jp-InputPrompt') || {}).textContent || '',
  source: (c.querySelector('.jp-InputArea-editor .cm-content') || {}).innerText || '',
  errors: [...c.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')]
            .map(e => e.innerText.slice(0, 2000)),
  images: [...c.querySelectorAll('.jp-OutputArea-output img')].map(i => [i.complete, i.naturalWidth]),
}));
"""
_IMAGES_JS = "return [...document.images].map(i => [i.getAttribute('src'), i.complete, i.naturalWidth]);"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(url: str, token: str) -> object:
    req = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read() or b"{}")


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("screenshots")
    print(f"\nscreenshots: {path}")
    return path


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab of this environment on 127.0.0.1 (random port, token), serving a copy of notebooks/ so
    that its autosave never writes outputs into the repository's notebooks (they are stored clean)."""
    tmp = tmp_path_factory.mktemp("lab")
    shutil.copytree(ROOT / "notebooks", tmp / "root" / "notebooks")
    port, token = _free_port(), secrets.token_hex(16)
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
           "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp / 'root'}",
           f"--LabApp.workspaces_dir={tmp / 'workspaces'}", f"--LabApp.user_settings_dir={tmp / 'settings'}",
           "--allow-root"]  # CI runs as root
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp / "rt"), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    log = open(tmp / "jupyter.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=tmp / "root", env=env)
    base, deadline = f"http://127.0.0.1:{port}", time.time() + 120
    while True:
        try:
            _api(f"{base}/api/status", token)
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail("jupyter lab did not start:\n" + (tmp / "jupyter.log").read_text()[-3000:])
            time.sleep(0.5)
    yield base, token
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        opts.add_argument(arg)
    if os.geteuid() == 0:
        opts.add_argument("--no-sandbox")  # Chromium refuses to start as root with its sandbox on
    drv = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    drv.set_page_load_timeout(120)
    yield drv
    drv.quit()


@pytest.fixture(scope="module")
def built_book(tmp_path_factory) -> Path:
    """02 executed by papermill (its run and table plot kept in the temporary folder), then the book."""
    from test_book import execute_into

    tmp = tmp_path_factory.mktemp("book")
    (tmp / "executed").mkdir()
    execute_into(["02_model"], tmp / "executed", tmp)
    return book.build(notebooks_dir=ROOT / "notebooks", executed_dir=tmp / "executed", tables_dir=tmp / "tables",
                      runs_dir=tmp / "runs", out_dir=tmp / "site", log=lambda *_: None)


def _wait(what: str, check, timeout: float, poll: float = 1.0):
    deadline = time.time() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


def _kernels_idle(base: str, token: str) -> bool:
    kernels = _api(f"{base}/api/kernels", token)
    return bool(kernels) and all(k["execution_state"] == "idle" for k in kernels)


@pytest.mark.parametrize("stem", LAB_NOTEBOOKS)
def test_notebook_runs_in_jupyterlab(lab, driver, shots, stem):
    from selenium.webdriver.common.by import By

    base, token = lab
    driver.get(f"{base}/lab/tree/notebooks/{stem}.ipynb?token={token}")
    _wait("the notebook to open", lambda: driver.execute_script(_STATE_JS), 120)
    _wait("the kernel to start", lambda: _kernels_idle(base, token), 120)
    # Run > Run All Cells, through the menu as a reader would
    _wait("the Run menu", lambda: [e for e in driver.find_elements(By.CSS_SELECTOR, ".lm-MenuBar-itemLabel")
                                   if e.text == "Run"], 30)[0].click()
    _wait("Run All Cells", lambda: [e for e in driver.find_elements(By.CSS_SELECTOR, "li.lm-Menu-item")
                                    if e.text.startswith("Run All Cells")], 30)[0].click()

    def finished():
        cells = driver.execute_script(_STATE_JS)
        done = all(c["prompt"].strip()[1:-2].isdigit() for c in cells)  # "[12]:", not "[*]:" or "[ ]:"
        return cells if done and _kernels_idle(base, token) else None

    cells = _wait(f"{stem} to run to the end", finished, RUN_TIMEOUT_S, poll=2.0)
    driver.save_screenshot(str(shots / f"lab_{stem}.png"))
    errors = [(i, c["source"][:80], e) for i, c in enumerate(cells) for e in c["errors"]]
    assert not errors, f"{stem}: stderr or error output in JupyterLab: {errors}"
    if stem == "02_model":
        # Table 13's bars: the cell that plots it shows a decoded image
        chart = [c for c in cells if "plot_table13" in c["source"]]
        assert chart, "02_model: no cell plots Table 13"
        figure = driver.find_elements(By.CSS_SELECTOR, ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output img")
        assert figure, "02_model: no image in any output area"
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", figure[-1])
        time.sleep(1)
        chart = [c for c in driver.execute_script(_STATE_JS) if "plot_table13" in c["source"]][0]
        assert chart["images"] and all(ok and width > 0 for ok, width in chart["images"]), chart
        driver.save_screenshot(str(shots / "lab_02_model_table13.png"))
    # the project's environment switches JupyterLab's news announcements off (Makefile, venv)
    assert "official Jupyter news" not in driver.execute_script("return document.body.innerText"), (
        "JupyterLab asks about news: `make venv` disables @jupyterlab/apputils-extension:announcements")


def test_book_pages_show_their_images(built_book, driver, shots):
    html = built_book.parent
    for page, min_images in (("index.html", 0), ("notebooks/02_model.html", 1), ("tables.html", 1)):
        driver.get((html / page).as_uri())
        assert "JLML workbook" in driver.title, page
        for img in driver.find_elements("css selector", "article img"):
            driver.execute_script("arguments[0].scrollIntoView();", img)

        def loaded():
            found = driver.execute_script(_IMAGES_JS)
            return (found,) if all(done for _, done, _ in found) else None

        images = _wait(f"{page}'s images to load", loaded, 30)[0]
        broken = [src for src, _, width in images if width == 0]
        assert not broken, f"{page}: images that did not load: {broken}"
        assert len(images) >= min_images, f"{page}: {len(images)} image(s), expected at least {min_images}"
        name = page.replace("/", "_").replace(".html", "")
        driver.execute_script("window.scrollTo(0, 0);")
        driver.save_screenshot(str(shots / f"book_{name}.png"))
        if images:
            figure = driver.find_elements("css selector", "article img")[0]
            driver.execute_script("arguments[0].scrollIntoView({block: 'center', behavior: 'instant'});", figure)
            driver.save_screenshot(str(shots / f"book_{name}_figure.png"))
