"""The drawing pad in a real browser: JupyterLab on 127.0.0.1, headless Chromium, a 4 drawn with the mouse.

The test writes a two-cell notebook that builds two readers from saved_models/cnn_basic.keras and
dnn.keras and shows a drawing_pad.DrawingPad for them, runs it in JupyterLab, draws
reader.EXAMPLE_STROKES on the canvas with mouse events and checks the verdicts the page shows.
It needs Debian's chromium at /usr/bin/chromium (.ci/run installs it) and Playwright for Python
(requirements.txt; its own browser download is never used). Set SAVE_PAD_SCREENSHOT=1 to refresh
figures/draw_pad.png, the screenshot the README shows.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import reader  # noqa: E402

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
MODELS = ("cnn_basic", "dnn")  # committed, small and quick to load; the first is taken as the best
TOKEN = "drawing-pad-test"
SCREENSHOT = PROJECT_ROOT / "figures" / "draw_pad.png"


def notebook_json() -> str:
    """A notebook that builds two readers from saved models and shows the pad for them, as model.ipynb's last
    section does: the first model alone and the ensemble of both, uncalibrated (temperature 1), refusing nothing."""
    setup = "\n".join([
        "import sys",
        f"root = {str(PROJECT_ROOT)!r}",
        "sys.path.insert(0, root)",
        "import drawing_pad",
        "import reader",
        f"names = {list(MODELS)!r}",
        "trained_models = {name: reader.load_model(f'{root}/saved_models/{name}.keras') for name in names}",
        "best = reader.Reader({names[0]: trained_models[names[0]]}, {names[0]: 1.0})",
        "ensemble = reader.Reader(trained_models, {name: 1.0 for name in names}, ensemble_temperature=1.0,",
        "                         score='probability', threshold=None)",
    ])
    pad = "drawing_pad.DrawingPad(best, ensemble)"
    cells = [{"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": source}
             for source in (setup, pad)]
    kernel = {"display_name": "Python 3", "language": "python", "name": "python3"}
    return json.dumps({"cells": cells, "metadata": {"kernelspec": kernel}, "nbformat": 4, "nbformat_minor": 5})


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def jupyter_url(tmp_path_factory):
    """JupyterLab serving a folder with the test notebook; its own config, data and runtime folders."""
    if not CHROMIUM.is_file():
        pytest.skip(f"no Chromium at {CHROMIUM}; install Debian's chromium (apt-get install chromium, as .ci/run does)")
    folder = tmp_path_factory.mktemp("drawing_pad")
    (folder / "pad.ipynb").write_text(notebook_json())
    config = folder / "config"
    # JupyterLab's news prompt would cover the page; nothing may be fetched from the network anyway.
    settings = config / "lab" / "user-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    notification_settings = {"fetchNews": "false", "checkForUpdates": False}
    (settings / "notification.jupyterlab-settings").write_text(json.dumps(notification_settings))
    environment = {**os.environ, "JUPYTER_CONFIG_DIR": str(config), "JUPYTER_DATA_DIR": str(folder / "data"),
                   "JUPYTER_RUNTIME_DIR": str(folder / "runtime"), "IPYTHONDIR": str(folder / "ipython")}
    port = free_port()
    log = open(folder / "jupyter.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
         f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={folder}", "--LabApp.expose_app_in_browser=True",
         "--ServerApp.allow_root=True"],  # CI runs as root
        cwd=folder, env=environment, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={TOKEN}", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"JupyterLab did not start; its log:\n{(folder / 'jupyter.log').read_text()}")
                time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def test_a_digit_drawn_with_the_mouse_is_read(jupyter_url, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(f"{jupyter_url}/lab/tree/pad.ipynb?token={TOKEN}")
            page.wait_for_function("window.jupyterapp && document.querySelector('.jp-Notebook .jp-Cell')",
                                   timeout=60_000)
            # Wait for the kernel, then run both cells as the "Run All Cells" menu item does.
            page.wait_for_function(
                "window.jupyterapp.shell.currentWidget?.sessionContext?.session?.kernel?.status === 'idle'",
                timeout=60_000)
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
            canvas = page.locator(".pad-canvas")
            canvas.wait_for(timeout=90_000)  # TensorFlow's import and the model's load come first
            canvas.scroll_into_view_if_needed()
            box = canvas.bounding_box()
            scale = box["width"] / reader.PAD_SIZE
            for stroke in reader.EXAMPLE_STROKES:
                (x, y), *rest = stroke
                page.mouse.move(box["x"] + x * scale, box["y"] + y * scale)
                page.mouse.down()
                for x, y in rest:
                    page.mouse.move(box["x"] + x * scale, box["y"] + y * scale, steps=4)
                page.mouse.up()
            root = page.locator(".pad-root")
            page.wait_for_function("document.querySelector('.pad-root')?.dataset.state === 'read'", timeout=30_000)
            # The verdict as text: "4", "not sure: 4 or 9" or "not a digit".
            best = page.locator(".pad-best-digit").inner_text()
            ensemble = page.locator(".pad-ensemble-digit").inner_text()
            message = page.locator(".pad-message").inner_text()
            root.screenshot(path=str(tmp_path / "draw_pad.png"))
            if os.environ.get("SAVE_PAD_SCREENSHOT"):
                shutil.copy(tmp_path / "draw_pad.png", SCREENSHOT)
            # Clear empties the pad and the reading.
            page.get_by_role("button", name="Clear").click()
            page.wait_for_function("document.querySelector('.pad-root')?.dataset.state === 'empty'", timeout=30_000)
        finally:
            browser.close()
    assert (best, ensemble, message) == ("4", "4", "")
