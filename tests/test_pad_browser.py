"""The drawing pad in a real browser: JupyterLab on 127.0.0.1, headless Chromium, digits drawn with the mouse.

The tests write a two-cell notebook that builds two readers from saved_models/cnn_basic.keras and
dnn.keras and shows a drawing_pad.DrawingPad for them, run it in JupyterLab (one server for the
module), draw on the canvas with mouse events and check what the page shows: the verdicts of a
drawn 4 and the map of where the best model looked, and teach mode (examples taught with the "it was"
buttons, saved to a file, reset and loaded again). They need Debian's chromium at /usr/bin/chromium
(.ci/run installs it) and Playwright for Python (requirements.txt; its own browser download is never used).

Set SAVE_PAD_SCREENSHOT=1 to refresh the screenshots the README shows, figures/draw_pad.png and
figures/draw_pad_teach.png: the notebook then reads with model.ipynb's own readers instead
(saved_models/resnet.keras with its calibration, and the ensemble of saved_models/reader.json).
"""

import json
import os
import re
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
TEACH_SCREENSHOT = PROJECT_ROOT / "figures" / "draw_pad_teach.png"
SAVE_SCREENSHOTS = bool(os.environ.get("SAVE_PAD_SCREENSHOT"))
# A writer's 7 with a foot, drawn like a Z, and 1 with a long flag, which the trained readers misread
# (see tests/test_drawing_pad.py), and a round 0, read right already: a third example for the README's screenshot.
Z_SEVEN = [[(60, 60), (220, 60), (60, 220), (220, 220)]]
FLAG_ONE = [[(60, 130), (170, 40), (170, 240)]]
ROUND_ZERO = [[(140, 40), (80, 80), (70, 150), (95, 220), (150, 240), (200, 200), (210, 120), (185, 60), (140, 40)]]


def notebook_json() -> str:
    """A notebook that builds two readers and shows the pad for them, as model.ipynb's last section does.

    Quick by default: the first small model alone and the ensemble of both, uncalibrated (temperature 1),
    refusing nothing. With SAVE_PAD_SCREENSHOT set, the readers model.ipynb shows, from saved_models/.
    """
    setup = [
        "import sys",
        f"root = {str(PROJECT_ROOT)!r}",
        "sys.path.insert(0, root)",
        "import drawing_pad",
        "import reader",
    ]
    if SAVE_SCREENSHOTS:
        setup += [
            "ensemble = reader.load_reader(f'{root}/saved_models')",
            "best = reader.load_single_model_reader(f'{root}/saved_models/resnet.keras')",
            "best.adaptation = ensemble.adaptation  # as model.ipynb's pad: the adaptation chosen on validation writers",
        ]
    else:
        setup += [
            f"names = {list(MODELS)!r}",
            "trained_models = {name: reader.load_model(f'{root}/saved_models/{name}.keras') for name in names}",
            # A light pull toward the trained weights, so that one taught drawing is enough for these small models.
            "light = {'pull': 0.1}",
            "best = reader.Reader({names[0]: trained_models[names[0]]}, {names[0]: 1.0}, adaptation=light)",
            "ensemble = reader.Reader(trained_models, {name: 1.0 for name in names}, ensemble_temperature=1.0,",
            "                         score='probability', threshold=None, adaptation=light)",
        ]
    pad = "drawing_pad.DrawingPad(best, ensemble)"
    cells = [{"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": source}
             for source in ("\n".join(setup), pad)]
    kernel = {"display_name": "Python 3", "language": "python", "name": "python3"}
    return json.dumps({"cells": cells, "metadata": {"kernelspec": kernel}, "nbformat": 4, "nbformat_minor": 5})


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def jupyter(tmp_path_factory):
    """(URL, folder) of JupyterLab serving a folder with the test notebook; its own config, data and runtime
    folders. The folder is the notebook kernel's working folder."""
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
        yield url, folder
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def open_pad(page, url):
    """Open the test notebook, run its cells and return the pad's canvas once it is shown."""
    page.goto(f"{url}/lab/tree/pad.ipynb?token={TOKEN}")
    page.wait_for_function("window.jupyterapp && document.querySelector('.jp-Notebook .jp-Cell')", timeout=60_000)
    # Wait for the kernel, then run both cells as the "Run All Cells" menu item does.
    page.wait_for_function(
        "window.jupyterapp.shell.currentWidget?.sessionContext?.session?.kernel?.status === 'idle'", timeout=60_000)
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    canvas = page.locator(".pad-canvas")
    canvas.wait_for(timeout=90_000)  # TensorFlow's import and the models' load come first
    return canvas


def draw(page, canvas, strokes):
    """Draw `strokes` (pad pixels) with the mouse and wait for the page to show their reading."""
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    scale = box["width"] / reader.PAD_SIZE
    for stroke in strokes:
        (x, y), *rest = stroke
        page.mouse.move(box["x"] + x * scale, box["y"] + y * scale)
        page.mouse.down()
        for x, y in rest:
            page.mouse.move(box["x"] + x * scale, box["y"] + y * scale, steps=4)
        page.mouse.up()
    page.wait_for_function("document.querySelector('.pad-root')?.dataset.state === 'read'", timeout=30_000)


def launch(playwright):
    # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
    return playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])


def test_a_digit_drawn_with_the_mouse_is_read(jupyter, tmp_path):
    from playwright.sync_api import sync_playwright

    url, _ = jupyter
    with sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            canvas = open_pad(page, url)
            draw(page, canvas, reader.EXAMPLE_STROKES)
            root = page.locator(".pad-root")
            # The verdict as text: "4", "not sure: 4 or 9" or "not a digit".
            best = page.locator(".pad-best-digit").inner_text()
            ensemble = page.locator(".pad-ensemble-digit").inner_text()
            message = page.locator(".pad-message").inner_text()
            # Under the prepared image, where the best model looked: a heat map over the digit, and its caption.
            page.wait_for_function("document.querySelector('.pad-root')?.dataset.saliency === 'shown'",
                                   timeout=30_000)
            heat_map = page.locator(".pad-saliency")
            assert heat_map.is_visible() and heat_map.bounding_box()["width"] > 50
            caption = page.locator(".pad-saliency-caption").inner_text()
            # Its pixels: some hot (red, over the ink the model used), most dark (no ink, no evidence).
            hot, dark = heat_map.evaluate(
                "canvas => { const data = canvas.getContext('2d').getImageData(0, 0, 28, 28).data;"
                " let hot = 0, dark = 0; for (let i = 0; i < data.length; i += 4) {"
                " if (data[i] > 200 && data[i] > data[i + 2] + 100) hot++;"
                " if (data[i] + data[i + 1] + data[i + 2] === 0) dark++; } return [hot, dark]; }")
            root.screenshot(path=str(tmp_path / "draw_pad.png"))
            if SAVE_SCREENSHOTS:
                shutil.copy(tmp_path / "draw_pad.png", SCREENSHOT)
            # Clear empties the pad and the reading.
            page.get_by_role("button", name="Clear").click()
            page.wait_for_function("document.querySelector('.pad-root')?.dataset.state === 'empty'", timeout=30_000)
            map_after_clear = heat_map.is_visible()
        finally:
            browser.close()
    assert (best, ensemble, message) == ("4", "4", "")
    assert re.fullmatch(r"where (cnn_basic|resnet) looked for its 4 \(\d\.\d\d s\)", caption), caption
    assert float(caption.split("(")[1].split(" ")[0]) < 0.5  # computed in well under a second
    assert hot >= 5 and dark > 28 * 28 // 2, (hot, dark)
    assert not map_after_clear


def wait_for_teaching(page, examples):
    """Wait until the pad has done the last command and shows `examples` examples."""
    page.wait_for_function(
        f"document.querySelector('.pad-root')?.dataset.teach === 'ready' && "
        f"document.querySelector('.pad-root')?.dataset.examples === '{examples}'", timeout=30_000)


def test_the_pad_is_taught_a_hand_saved_reset_and_loaded(jupyter, tmp_path):
    from playwright.sync_api import sync_playwright

    url, folder = jupyter
    with sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            canvas = open_pad(page, url)
            wait_for_teaching(page, 0)
            clear = page.get_by_role("button", name="Clear")
            digit_enabled = [page.locator(f".pad-teach-{digit}").is_enabled() for digit in range(10)]
            assert not any(digit_enabled)  # nothing drawn yet: nothing to teach

            # Teach: a 7 drawn like a Z, (for the README, a 0 read right already,) then a 1 with a long flag.
            taught = [(Z_SEVEN, 7)] + ([(ROUND_ZERO, 0)] if SAVE_SCREENSHOTS else []) + [(FLAG_ONE, 1)]
            untaught = []  # what the page read in each drawing before it was taught (adapted to those before it)
            for count, (strokes, digit) in enumerate(taught, start=1):
                clear.click()
                draw(page, canvas, strokes)
                untaught.append(page.locator(".pad-best-digit").inner_text())
                page.locator(f".pad-teach-{digit}").click()
                wait_for_teaching(page, count)
                if not SAVE_SCREENSHOTS:  # the notebook's reader is pulled harder: one drawing may not be enough
                    assert page.locator(".pad-best-digit").inner_text() == str(digit)  # read again, adapted
            cards = page.locator(".pad-example")
            assert cards.count() == len(taught)
            first_card = cards.nth(0)
            assert first_card.locator(".pad-example-digit").inner_text() == "it was 7"
            if SAVE_SCREENSHOTS:
                # The README's screenshot shows what the notebook's own readers make of these examples.
                page.locator(".pad-root").screenshot(path=str(TEACH_SCREENSHOT))
                return
            # Before: what the trained reader read in the Z, as the page showed it, in the card's short words.
            before = untaught[0].replace("not sure: ", "") + ("?" if untaught[0].startswith("not sure") else "")
            assert first_card.locator(".pad-example-best").inner_text() == f"best {before} → 7"
            assert first_card.locator(".pad-example-ensemble").inner_text().endswith("→ 7")
            note = page.locator(".pad-adapted-note").inner_text()
            assert note.startswith(f"adapted to your {len(taught)} examples (adapted in ") and note.endswith(" s)")
            assert page.locator(".pad-teach-message").inner_text().startswith(f"taught: that was a {taught[-1][1]}")
            page.locator(".pad-root").screenshot(path=str(tmp_path / "draw_pad_teach.png"))
            if SAVE_SCREENSHOTS:
                shutil.copy(tmp_path / "draw_pad_teach.png", TEACH_SCREENSHOT)

            # Save under a typed name, in the notebook's folder.
            page.locator(".pad-file-name").fill("my_hand.json")
            page.locator(".pad-save").click()
            wait_for_teaching(page, len(taught))
            path = Path(folder) / "my_hand.json"
            assert page.locator(".pad-teach-message").inner_text() == f"saved {len(taught)} examples to {path}"
            _, digits = reader.load_examples(path)
            assert digits.tolist() == [digit for _, digit in taught]

            # Reset: the trained readers again; load: the examples back.
            page.locator(".pad-reset").click()
            wait_for_teaching(page, 0)
            assert page.locator(".pad-example").count() == 0 and page.locator(".pad-adapted-note").inner_text() == ""
            clear.click()
            draw(page, canvas, Z_SEVEN)
            assert page.locator(".pad-best-digit").inner_text() == untaught[0]  # as before any teaching
            page.locator(".pad-load").click()
            wait_for_teaching(page, len(taught))
            assert page.locator(".pad-teach-message").inner_text() == f"loaded {len(taught)} examples from {path}"
            assert page.locator(".pad-best-digit").inner_text() == "7"

            # A name that is no file: one line, in red, and the examples stay.
            page.locator(".pad-file-name").fill("nowhere.json")
            page.locator(".pad-load").click()
            wait_for_teaching(page, len(taught))
            message = page.locator(".pad-teach-message")
            assert message.inner_text() == f"{Path(folder) / 'nowhere.json'}: no such file of examples; type the " \
                                           "name they were saved under."
            assert "pad-error" in message.get_attribute("class")
        finally:
            browser.close()
