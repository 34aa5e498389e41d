"""The drawing pad without a browser: strokes drawn into images (reader), the readings of a drawing and the
widget's Python side (drawing_pad), and the figure of a reading (helpers.plot_digit_reading)."""

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import drawing_pad  # noqa: E402
import helpers  # noqa: E402
import reader  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parent.parent

def test_a_short_vertical_stroke_gives_a_known_image():
    # Pen 2 from (4, 2) to (4, 6): the pixel centres x = 3.5 and 4.5 are 0.5 from the line (full ink),
    # x = 2.5 and 5.5 are 1.5 away (none). The round caps reach the rows above and below:
    # their centres are sqrt(0.5) from the ends, so ink 1 + 0.5 - 0.707 = 0.793.
    image = reader.strokes_to_image([[(4, 2), (4, 6)]], size=8, pen_width=2)
    cap = 1.5 - np.sqrt(0.5)
    expected = np.zeros((8, 8), dtype=np.float32)
    expected[2:6, 3:5] = 1.0
    expected[[1, 6], 3:5] = cap
    np.testing.assert_allclose(image, expected, atol=1e-6)
    assert image.dtype == np.float32


def test_a_tap_is_a_round_dot_and_strokes_add_up():
    dot = reader.strokes_to_image([[(4, 4)]], size=8, pen_width=2)
    expected = np.zeros((8, 8), dtype=np.float32)
    expected[3:5, 3:5] = 1.5 - np.sqrt(0.5)
    np.testing.assert_allclose(dot, expected, atol=1e-6)
    line = reader.strokes_to_image([[(4, 2), (4, 6)]], size=8, pen_width=2)
    both = reader.strokes_to_image([[(4, 2), (4, 6)], [(4, 4)]], size=8, pen_width=2)
    np.testing.assert_allclose(both, np.maximum(line, dot))  # overlapping ink is not counted twice
    assert reader.strokes_to_image([], size=8).max() == 0.0


def test_example_strokes_are_inked_along_their_path_only():
    image = reader.strokes_to_image(reader.EXAMPLE_STROKES)
    assert image.shape == (reader.PAD_SIZE, reader.PAD_SIZE)
    radius = reader.PEN_WIDTH / 2
    rows, columns = np.nonzero(image)
    centres = np.stack([columns + 0.5, rows + 0.5], axis=1)
    points = np.concatenate([np.linspace(start, end, 200) for stroke in reader.EXAMPLE_STROKES
                             for start, end in zip(np.asarray(stroke, float), np.asarray(stroke, float)[1:])])
    nearest = np.min(np.linalg.norm(centres[:, None, :] - points[None, ::7, :], axis=2), axis=1)
    assert nearest.max() < radius + 0.5 + 1.5  # no ink far from the strokes (1.5: spacing of the sampled points)
    for x, y in points.astype(int):
        assert image[y, x] == 1.0  # every point the pen passed is full ink


def test_strokes_off_the_canvas_are_cut_off():
    image = reader.strokes_to_image([[(-50, -50), (-10, -10)], [(5, -3), (5, 3)]], size=10, pen_width=2)
    assert image[:4].max() == 1.0 and image[5:].max() == 0.0 and image.shape == (10, 10)


@pytest.mark.parametrize("strokes, message", [
    ([[(1, 2, 3)]], r"stroke 0 has shape \(1, 3\)"),
    ([[(1, 2)], []], r"stroke 1 has shape \(0,\)"),
    ([[(1, float("nan"))]], "finite"),
    ([["a", "b"]], "stroke 0 is not a list of"),
])
def test_bad_strokes_are_refused_by_name(strokes, message):
    with pytest.raises(ValueError, match=message):
        reader.strokes_to_image(strokes)


def test_bad_canvas_or_pen_is_refused():
    with pytest.raises(ValueError, match="size=0"):
        reader.strokes_to_image([], size=0)
    with pytest.raises(ValueError, match="pen_width=-1"):
        reader.strokes_to_image([], pen_width=-1)


def test_the_pen_gives_mnist_like_ink(mnist_dir):
    # The example is a 4: prepared, it should hold about as much ink as MNIST's 4s do on average.
    (train_images, train_labels), _ = helpers.load_mnist(mnist_dir)
    mnist_ink = (train_images[train_labels == 4] / 255).sum(axis=(1, 2)).mean()
    prepared = reader.prepare_digit_image(reader.strokes_to_image(reader.EXAMPLE_STROKES), ink="light")
    assert 0.75 * mnist_ink < prepared.sum() < 1.25 * mnist_ink


# The pad's readers are built from the two small committed models, as model.ipynb builds its own.
MODELS_DIR = PROJECT_ROOT / "saved_models"
PAD_MODELS = ("cnn_basic", "dnn")


@pytest.fixture(scope="module")
def models():
    missing = [name for name in PAD_MODELS if not (MODELS_DIR / f"{name}.keras").is_file()]
    if missing:
        pytest.skip(f"no saved_models/{missing[0]}.keras; run `make run` to train and save the models")
    return {name: reader.load_model(MODELS_DIR / f"{name}.keras") for name in PAD_MODELS}


@pytest.fixture(scope="module")
def best_reader(models):
    return reader.Reader({"cnn_basic": models["cnn_basic"]}, {"cnn_basic": 1.0})


@pytest.fixture(scope="module")
def ensemble_reader(models):
    return reader.Reader(models, {name: 1.0 for name in models}, ensemble_temperature=1.0, score="probability",
                         threshold=0.5)


def test_read_drawing_gives_both_readings(best_reader, ensemble_reader):
    reading = drawing_pad.read_drawing(reader.EXAMPLE_STROKES, best_reader, ensemble_reader)
    assert reading.best_label == "best model (cnn_basic)" and reading.ensemble_label == "ensemble of 2"
    for answer in (reading.best, reading.ensemble):
        assert isinstance(answer, reader.Reading)
        assert answer.verdict == "digit" and answer.digit == 4 and answer.candidates == [4]
        assert answer.probabilities.shape == (10,) and answer.probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    # The prepared image is the one predict.py would make of the same drawing, light ink on black.
    drawing = reader.strokes_to_image(reader.EXAMPLE_STROKES)
    np.testing.assert_array_equal(reading.drawing, drawing)
    np.testing.assert_array_equal(reading.prepared, reader.prepare_digit_image(drawing, ink="light"))
    np.testing.assert_array_equal(reading.prepared, reader.prepare_strokes(reader.EXAMPLE_STROKES))
    # Each reading is what its reader says of the prepared image on its own.
    assert reading.best.as_dict() == best_reader.read(reading.prepared)[0].as_dict()
    assert reading.ensemble.as_dict() == ensemble_reader.read(reading.prepared)[0].as_dict()


def test_read_drawing_refuses_an_empty_drawing(best_reader, ensemble_reader):
    with pytest.raises(ValueError, match="the drawing is empty"):
        drawing_pad.read_drawing([[(-100, -100)]], best_reader, ensemble_reader)


def test_plot_digit_reading_shows_drawing_prepared_image_and_bars(best_reader, ensemble_reader):
    import matplotlib.pyplot as plt
    from matplotlib.text import Text

    reading = drawing_pad.read_drawing(reader.EXAMPLE_STROKES, best_reader, ensemble_reader)
    figure = helpers.plot_digit_reading(reading)
    assert len(figure.axes) == 3
    drawn, prepared, bars = figure.axes
    assert drawn.images[0].get_array().shape == (reader.PAD_SIZE, reader.PAD_SIZE)
    assert prepared.images[0].get_array().shape == (28, 28)
    # Ten bars per reader, as tall as its calibrated probabilities, and each verdict in words.
    heights = [patch.get_height() for patch in bars.patches]
    np.testing.assert_allclose(heights, np.concatenate([reading.best.probabilities, reading.ensemble.probabilities]))
    words = [text.get_text() for text in figure.findobj(Text)]
    for label, answer in ((reading.best_label, reading.best), (reading.ensemble_label, reading.ensemble)):
        assert answer.text.startswith("4 (") and any(f"{label}: {answer.text}" in text for text in words)
    plt.close(figure)


def test_the_pad_reads_each_new_set_of_strokes(best_reader, ensemble_reader):
    pad = drawing_pad.DrawingPad(best_reader, ensemble_reader)
    assert pad.reading == {} and pad.size == reader.PAD_SIZE and pad.pen_width == reader.PEN_WIDTH
    assert "export default" in pad._esm  # the browser half, drawing_pad.js, is loaded
    # What the browser sends when a stroke ends: lists of [x, y].
    pad.strokes = [[list(point) for point in stroke] for stroke in reader.EXAMPLE_STROKES]
    assert pad.reading["strokes"] == 2  # which drawing this reading is of
    assert len(pad.reading["prepared"]) == 28 * 28
    np.testing.assert_allclose(pad.reading["prepared"], pad.read(reader.EXAMPLE_STROKES).prepared.ravel(), atol=5e-4)
    expected = pad.read(reader.EXAMPLE_STROKES)
    for key, label, answer in (("best", "best model (cnn_basic)", expected.best),
                               ("ensemble", "ensemble of 2", expected.ensemble)):
        entry = pad.reading[key]
        assert set(entry) == {"label", "text", "digit", "verdict", "candidates", "probabilities", "score"}
        assert entry["label"] == label and entry["verdict"] == "digit" and entry["digit"] == 4
        assert entry["text"] == answer.text and entry["text"].startswith("4 (")
        assert entry["candidates"] == [4] and len(entry["probabilities"]) == 10
        assert sum(entry["probabilities"]) == pytest.approx(1.0, abs=1e-4)
    pad.strokes = [[[-100, -100]]]
    assert pad.reading == {"strokes": 1, "message": "the drawing is empty (no stroke on the pad); draw a digit on it."}
    pad.strokes = []  # the Clear button
    assert pad.reading == {"strokes": 0}


def test_the_pad_passes_on_not_sure_and_not_a_digit(models):
    # A threshold above any probability refuses everything; a runner-up share of 0 makes every answer "not sure".
    refusing = reader.Reader({"dnn": models["dnn"]}, {"dnn": 1.0}, threshold=1.5)
    unsure = reader.Reader(models, {name: 1.0 for name in models}, not_sure_second_probability=0.0)
    pad = drawing_pad.DrawingPad(refusing, unsure)
    pad.strokes = [[list(point) for point in stroke] for stroke in reader.EXAMPLE_STROKES]
    best, ensemble = pad.reading["best"], pad.reading["ensemble"]
    assert best["verdict"] == "not a digit" and best["digit"] is None and best["text"] == "not a digit"
    assert best["candidates"] == [] and len(best["probabilities"]) == 10
    assert ensemble["verdict"] == "not sure" and ensemble["digit"] is None
    assert ensemble["candidates"][0] == 4 and len(ensemble["candidates"]) == 2
    assert ensemble["text"].startswith(f"not sure: 4 or {ensemble['candidates'][1]} (")


def test_the_pad_says_what_it_is_where_no_browser_shows_it(best_reader, ensemble_reader):
    pad = drawing_pad.DrawingPad(best_reader, ensemble_reader)
    data, _ = pad._repr_mimebundle_()
    text = data["text/plain"]
    assert text.startswith("DrawingPad for cnn_basic and an ensemble of 2: draw a digit here")
    assert repr(pad) == text and " at 0x" not in text  # no memory address in a committed notebook
    assert "application/vnd.jupyter.widget-view+json" in data


@pytest.mark.parametrize("position", ["best_reader", "ensemble_reader"])
def test_the_pad_refuses_what_is_not_a_reader(models, best_reader, position):
    # The old call, DrawingPad(models, best_name, members), must fail with a message that says what to pass.
    arguments = {"best_reader": best_reader, "ensemble_reader": best_reader, position: models}
    with pytest.raises(ValueError, match=f"{position} is a dict; pass a reader.Reader"):
        drawing_pad.DrawingPad(**arguments)
