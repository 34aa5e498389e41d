"""The committed reader says "not a digit" to non-digits drawn here about as often as model.ipynb reports,
keeps MNIST digits, and predict.py tells a person so.

These check the full run's results: saved_models/reader.json (with its members) and the "refusal"
entry of figures/metrics.json. Until `make run` has written both, they are skipped. The
non-digits are drawn here with other seeds than the notebook's, through the path a person's input
takes (pen strokes through the pad's preparation, a photo through predict.py's).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import other_sources
import reader
from conftest import PROJECT_ROOT

MODELS_DIR = PROJECT_ROOT / "saved_models"
METRICS_FILE = PROJECT_ROOT / "figures" / "metrics.json"
# The notebook measured each rate on its own few hundred held-out inputs, and these tests draw 100
# or 200 more: the binomial standard deviation of a share measured on 200 draws is at most
# sqrt(0.25 / 200) = 0.035 (0.05 on 100), so 0.08 allows for the sampling error of both
# measurements without letting a reader that refuses far less than reported pass.
NON_DIGIT_TOLERANCE = 0.08
# 2,000 MNIST digits kept at about 99% vary by sqrt(0.01 * 0.99 / 2000) = 0.002; 0.02 is ten times that.
DIGIT_TOLERANCE = 0.02


@pytest.fixture(scope="module")
def refusal():
    """The "refusal" entry of figures/metrics.json; the tests skip until a full run has written it and the reader."""
    if not (MODELS_DIR / reader.READER_FILE).is_file():
        pytest.skip(f"no {MODELS_DIR / reader.READER_FILE}; run `make run` to fit and save the reader")
    if not METRICS_FILE.is_file():
        pytest.skip(f"no {METRICS_FILE}; run `make run` to measure the reader")
    metrics = json.loads(METRICS_FILE.read_text())
    if "refusal" not in metrics:
        pytest.skip(f"{METRICS_FILE} has no 'refusal' entry (written before the reader existed); run `make run`")
    return metrics["refusal"]


@pytest.fixture(scope="module")
def digit_reader(refusal):
    return reader.load_reader(MODELS_DIR)


def reported(refusal, entry, kind):
    """What the notebook reported: refusal[entry][kind] (entry "kept" or "refused")."""
    if kind not in refusal.get(entry, {}):
        pytest.skip(f"{METRICS_FILE}: refusal[{entry!r}] has no {kind!r}; run `make run`")
    return refusal[entry][kind]


def refused_share(digit_reader, items, prepare):
    """The share of `items` the reader refuses: the preparation's ValueError (a blank input) counts as refused,
    as model.ipynb counts it, since a person is told so instead of a digit."""
    prepared, blank = [], 0
    for item in items:
        try:
            prepared.append(prepare(item))
        except ValueError:
            blank += 1
    readings = digit_reader.read(prepared) if prepared else []
    return (blank + sum(reading.verdict == "not a digit" for reading in readings)) / len(items)


def test_scribbles_are_refused_about_as_often_as_reported(refusal, digit_reader):
    scribbles = other_sources.random_scribbles(200, np.random.default_rng(12345))
    share = refused_share(digit_reader, scribbles, reader.prepare_strokes)
    assert share >= reported(refusal, "refused", "scribbles") - NON_DIGIT_TOLERANCE


def test_photos_of_blank_paper_are_refused_about_as_often_as_reported(refusal, digit_reader):
    photos = other_sources.blank_paper_photos(100, np.random.default_rng(12345))
    share = refused_share(digit_reader, photos, lambda photo: reader.prepare_digit_image(photo, ink="auto"))
    assert share >= reported(refusal, "refused", "blank paper") - NON_DIGIT_TOLERANCE


def test_mnist_test_digits_are_kept_about_as_often_as_reported(refusal, digit_reader, mnist_dir):
    import helpers

    _, (test_images, _) = helpers.load_mnist(mnist_dir)
    readings = digit_reader.read(helpers.to_model_input(test_images[:2000]))
    kept = np.mean([reading.verdict != "not a digit" for reading in readings])
    assert kept >= reported(refusal, "kept", "MNIST test") - DIGIT_TOLERANCE


def test_predict_says_a_blank_page_is_not_a_digit(refusal, tmp_path):
    # An unevenly lit photo of an empty sheet: the preparation cannot call it blank, the reader must refuse it.
    photo = other_sources.blank_paper_photos(1, np.random.default_rng(7))[0]
    Image.fromarray(np.clip(photo, 0, 255).astype(np.uint8)).save(tmp_path / "blank_page.png")
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [sys.executable, str(PROJECT_ROOT / "predict.py"), "blank_page.png"]  # the default reader
    text = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=environment, timeout=300)
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith("blank_page.png: not a digit"), text.stdout
    as_json = subprocess.run([*command, "--json"], capture_output=True, text=True, cwd=tmp_path, env=environment,
                             timeout=300)
    assert as_json.returncode == 0, as_json.stderr
    entry = json.loads(as_json.stdout)
    assert entry["file"] == "blank_page.png" and entry["verdict"] == "not a digit" and entry["digit"] is None
    assert entry["score"] < entry["threshold"]
