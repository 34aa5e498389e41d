"""The drawing pad without a browser: strokes drawn into images, the reading of a drawing, the widget's Python side."""

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import helpers



def test_a_short_vertical_stroke_gives_a_known_image():
    # Pen 2 from (4, 2) to (4, 6): the pixel centres x = 3.5 and 4.5 are 0.5 from the line (full ink),
    # x = 2.5 and 5.5 are 1.5 away (none). The round caps reach the rows above and below:
    # their centres are sqrt(0.5) from the ends, so ink 1 + 0.5 - 0.707 = 0.793.
    image = helpers.strokes_to_image([[(4, 2), (4, 6)]], size=8, pen_width=2)
    cap = 1.5 - np.sqrt(0.5)
    expected = np.zeros((8, 8), dtype=np.float32)
    expected[2:6, 3:5] = 1.0
    expected[[1, 6], 3:5] = cap
    np.testing.assert_allclose(image, expected, atol=1e-6)
    assert image.dtype == np.float32


def test_a_tap_is_a_round_dot_and_strokes_add_up():
    dot = helpers.strokes_to_image([[(4, 4)]], size=8, pen_width=2)
    expected = np.zeros((8, 8), dtype=np.float32)
    expected[3:5, 3:5] = 1.5 - np.sqrt(0.5)
    np.testing.assert_allclose(dot, expected, atol=1e-6)
    line = helpers.strokes_to_image([[(4, 2), (4, 6)]], size=8, pen_width=2)
    both = helpers.strokes_to_image([[(4, 2), (4, 6)], [(4, 4)]], size=8, pen_width=2)
    np.testing.assert_allclose(both, np.maximum(line, dot))  # overlapping ink is not counted twice
    assert helpers.strokes_to_image([], size=8).max() == 0.0


def test_example_strokes_are_inked_along_their_path_only():
    image = helpers.strokes_to_image(helpers.EXAMPLE_STROKES)
    assert image.shape == (helpers.PAD_SIZE, helpers.PAD_SIZE)
    radius = helpers.PEN_WIDTH / 2
    rows, columns = np.nonzero(image)
    centres = np.stack([columns + 0.5, rows + 0.5], axis=1)
    points = np.concatenate([np.linspace(start, end, 200) for stroke in helpers.EXAMPLE_STROKES
                             for start, end in zip(np.asarray(stroke, float), np.asarray(stroke, float)[1:])])
    nearest = np.min(np.linalg.norm(centres[:, None, :] - points[None, ::7, :], axis=2), axis=1)
    assert nearest.max() < radius + 0.5 + 1.5  # no ink far from the strokes (1.5: spacing of the sampled points)
    for x, y in points.astype(int):
        assert image[y, x] == 1.0  # every point the pen passed is full ink


def test_strokes_off_the_canvas_are_cut_off():
    image = helpers.strokes_to_image([[(-50, -50), (-10, -10)], [(5, -3), (5, 3)]], size=10, pen_width=2)
    assert image[:4].max() == 1.0 and image[5:].max() == 0.0 and image.shape == (10, 10)


@pytest.mark.parametrize("strokes, message", [
    ([[(1, 2, 3)]], r"stroke 0 has shape \(1, 3\)"),
    ([[(1, 2)], []], r"stroke 1 has shape \(0,\)"),
    ([[(1, float("nan"))]], "finite"),
    ([["a", "b"]], "stroke 0 is not a list of"),
])
def test_bad_strokes_are_refused_by_name(strokes, message):
    with pytest.raises(ValueError, match=message):
        helpers.strokes_to_image(strokes)


def test_bad_canvas_or_pen_is_refused():
    with pytest.raises(ValueError, match="size=0"):
        helpers.strokes_to_image([], size=0)
    with pytest.raises(ValueError, match="pen_width=-1"):
        helpers.strokes_to_image([], pen_width=-1)


def test_the_pen_gives_mnist_like_ink(mnist_dir):
    # The example is a 4: prepared, it should hold about as much ink as MNIST's 4s do on average.
    (train_images, train_labels), _ = helpers.load_mnist(mnist_dir)
    mnist_ink = (train_images[train_labels == 4] / 255).sum(axis=(1, 2)).mean()
    prepared = helpers.prepare_digit_image(helpers.strokes_to_image(helpers.EXAMPLE_STROKES), ink="light")
    assert 0.75 * mnist_ink < prepared.sum() < 1.25 * mnist_ink


class FixedModel:
    """A stand-in for a Keras model that answers the same probabilities for every image."""

    def __init__(self, digit, confidence=0.9):
        self.row = np.full(10, (1 - confidence) / 9, dtype=np.float32)
        self.row[digit] = confidence
        self.calls = 0

    def predict(self, images, batch_size=None, verbose=0):
        self.calls += 1
        return np.tile(self.row, (len(images), 1))


@pytest.fixture()
def models():
    return {"sure_four": FixedModel(4, 0.9), "unsure_four": FixedModel(4, 0.5), "nine": FixedModel(9, 0.8)}


def test_read_drawing_gives_best_and_ensemble(models):
    reading = helpers.read_drawing(helpers.EXAMPLE_STROKES, models, "sure_four", ["unsure_four", "nine"])
    assert reading.best_digit == 4 and reading.best_name == "sure_four"
    np.testing.assert_allclose(reading.ensemble_probabilities,
                               (models["unsure_four"].row + models["nine"].row) / 2, rtol=1e-6)
    assert reading.ensemble_digit == 9  # mean of (0.5 for 4, 0.056 for 9) and (0.022 for 4, 0.8 for 9)
    assert reading.ensemble_label == "ensemble of 2 models" and reading.best_label == "best model (sure_four)"
    # The prepared image is the one predict.py would make of the same drawing.
    np.testing.assert_array_equal(reading.prepared,
                                  helpers.prepare_digit_image(helpers.strokes_to_image(helpers.EXAMPLE_STROKES)))
    np.testing.assert_array_equal(reading.drawing, helpers.strokes_to_image(helpers.EXAMPLE_STROKES))


def test_each_model_is_run_once_even_when_the_best_is_a_member(models):
    helpers.read_drawing(helpers.EXAMPLE_STROKES, models, "sure_four", ["sure_four", "nine"])
    assert models["sure_four"].calls == 1 and models["nine"].calls == 1 and models["unsure_four"].calls == 0


def test_read_drawing_refuses_unknown_models_and_empty_drawings(models):
    with pytest.raises(ValueError, match=r"best_name='cnn' is not among the models \(sure_four, unsure_four, nine\)"):
        helpers.read_drawing(helpers.EXAMPLE_STROKES, models, "cnn", ["nine"])
    with pytest.raises(ValueError, match=r"\['resnet'\] not among the models"):
        helpers.read_drawing(helpers.EXAMPLE_STROKES, models, "nine", ["nine", "resnet"])
    with pytest.raises(ValueError, match="no members"):
        helpers.read_drawing(helpers.EXAMPLE_STROKES, models, "nine", [])
    with pytest.raises(ValueError, match="the drawing is empty"):
        helpers.read_drawing([[(-100, -100)]], models, "nine", ["nine"])


def test_plot_digit_reading_shows_drawing_prepared_image_and_bars(models):
    import matplotlib.pyplot as plt

    reading = helpers.read_drawing(helpers.EXAMPLE_STROKES, models, "sure_four", ["unsure_four", "nine"])
    figure = helpers.plot_digit_reading(reading)
    drawn, prepared, bars = figure.axes
    assert drawn.images[0].get_array().shape == (helpers.PAD_SIZE, helpers.PAD_SIZE)
    assert prepared.images[0].get_array().shape == (28, 28)
    assert len(bars.patches) == 20 and "read as 4 (best model) and 9 (ensemble)" == bars.get_title()
    plt.close(figure)


def test_the_pad_reads_each_new_set_of_strokes(models):
    pad = helpers.DrawingPad(models, "sure_four", ["unsure_four", "nine"])
    assert pad.reading == {} and pad.size == helpers.PAD_SIZE and pad.pen_width == helpers.PEN_WIDTH
    assert "export default" in pad._esm  # the browser half, drawing_pad.js, is loaded
    # What the browser sends when a stroke ends: lists of [x, y].
    pad.strokes = [[list(point) for point in stroke] for stroke in helpers.EXAMPLE_STROKES]
    assert pad.reading["best"] == {"label": "best model (sure_four)", "digit": 4,
                                   "probabilities": models["sure_four"].row.tolist()}
    assert pad.reading["ensemble"]["digit"] == 9 and len(pad.reading["prepared"]) == 28 * 28
    assert pad.reading["strokes"] == 2  # which drawing this reading is of
    np.testing.assert_allclose(pad.reading["prepared"], pad.read(helpers.EXAMPLE_STROKES).prepared.ravel(), atol=5e-4)
    pad.strokes = [[[-100, -100]]]
    assert pad.reading == {"strokes": 1, "message": "the drawing is empty (no stroke on the pad); draw a digit on it."}
    pad.strokes = []  # the Clear button
    assert pad.reading == {"strokes": 0}


def test_the_pad_says_what_it_is_where_no_browser_shows_it(models):
    pad = helpers.DrawingPad(models, "sure_four", ["unsure_four", "nine"])
    data, _ = pad._repr_mimebundle_()
    assert data["text/plain"].startswith("DrawingPad for sure_four and an ensemble of 2: draw a digit here")
    assert "application/vnd.jupyter.widget-view+json" in data


def test_the_pad_refuses_unknown_models(models):
    with pytest.raises(ValueError, match="best_name='dnn'"):
        helpers.DrawingPad(models, "dnn", ["nine"])
