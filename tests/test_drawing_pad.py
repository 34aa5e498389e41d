"""The drawing pad without a browser: strokes drawn into images (reader), the readings of a drawing and the
widget's Python side (drawing_pad) with where the best model looked (saliency) and its teach mode (examples taught,
saved, reset and loaded, by method and by the page's commands), and the figure of a reading
(helpers.plot_digit_reading)."""

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import drawing_pad  # noqa: E402
import helpers  # noqa: E402
import reader  # noqa: E402
import saliency  # noqa: E402

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
# The pull toward the trained weights weighs against the SUM of the examples' cross-entropies (reader.fit_head):
# the default 1.0 lets one drawing move these small models only a little, so the tests teach with a lighter one.
LIGHT_PULL = {"pull": 0.1}


@pytest.fixture(scope="module")
def models():
    missing = [name for name in PAD_MODELS if not (MODELS_DIR / f"{name}.keras").is_file()]
    if missing:
        pytest.skip(f"no saved_models/{missing[0]}.keras; run `make run` to train and save the models")
    return {name: reader.load_model(MODELS_DIR / f"{name}.keras") for name in PAD_MODELS}


@pytest.fixture(scope="module")
def best_reader(models):
    return reader.Reader({"cnn_basic": models["cnn_basic"]}, {"cnn_basic": 1.0}, adaptation=LIGHT_PULL)


@pytest.fixture(scope="module")
def ensemble_reader(models):
    return reader.Reader(models, {name: 1.0 for name in models}, ensemble_temperature=1.0, score="probability",
                         threshold=0.5, adaptation=LIGHT_PULL)


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
    assert pad.saliency == {"strokes": 1}  # nothing read, nothing to explain
    pad.strokes = []  # the Clear button
    assert pad.reading == {"strokes": 0} and pad.saliency == {"strokes": 0}


def test_the_pad_shows_where_the_best_model_looked(best_reader, ensemble_reader):
    pad = drawing_pad.DrawingPad(best_reader, ensemble_reader)
    assert pad.saliency == {}
    pad.strokes = [[list(point) for point in stroke] for stroke in reader.EXAMPLE_STROKES]
    looked = pad.saliency
    assert set(looked) == {"strokes", "model", "digit", "heatmap", "seconds"}
    assert looked["strokes"] == 2 and looked["model"] == "cnn_basic"
    assert looked["digit"] == 4 == pad.reading["best"]["digit"]
    # The map the notebook draws (saliency.heatmap of integrated gradients), over the prepared image, in [0, 1].
    prepared = pad.read(reader.EXAMPLE_STROKES).prepared
    heat = np.asarray(looked["heatmap"])
    assert heat.shape == (28 * 28,) and heat.min() == 0.0 and heat.max() == 1.0
    expected = saliency.heatmap(saliency.integrated_gradients(best_reader.models["cnn_basic"], prepared, 4)[0])
    np.testing.assert_allclose(heat, expected.ravel(), atol=5e-4)
    np.testing.assert_allclose(heat, drawing_pad.where_it_looked(prepared, best_reader, 4).ravel(), atol=5e-4)
    # With a black baseline only ink is credited, and the map picks out part of the digit, not all of it.
    assert np.all(heat[prepared.ravel() == 0.0] == 0.0) and 0 < np.mean(heat[prepared.ravel() > 0.5]) < 0.9
    # Computed in well under a second (traced when the pad was built, not on the first drawing).
    assert 0 < looked["seconds"] < 0.5


class Exported:
    """A stand-in for reader.OnnxModel, as the pad sees one: the path of its .onnx file, and no layers."""

    def __init__(self, path):
        self.path = path


def test_a_model_read_from_its_onnx_export_is_explained_with_its_keras_file(best_reader, tmp_path):
    # An ONNX export has no gradients: the map comes from the .keras file beside it.
    exported = Exported(MODELS_DIR / "cnn_basic.onnx")
    onnx_reader = reader.Reader({"cnn_basic": exported}, {"cnn_basic": 1.0})
    prepared = reader.prepare_strokes(reader.EXAMPLE_STROKES)
    np.testing.assert_array_equal(drawing_pad.where_it_looked(prepared, onnx_reader, 4),
                                  drawing_pad.where_it_looked(prepared, best_reader, 4))
    assert drawing_pad.keras_model_of(exported) is drawing_pad.keras_model_of(exported)  # loaded once
    lost = reader.Reader({"lost": Exported(tmp_path / "lost.onnx")}, {"lost": 1.0})
    with pytest.raises(FileNotFoundError, match=re.escape(f"{tmp_path / 'lost.keras'}: no such saved model")):
        drawing_pad.where_it_looked(prepared, lost, 4)


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
    # Refused: no map, for no digit was read. Not sure: the map of the most likely digit.
    assert pad.saliency == {"strokes": 2}
    unsure_pad = drawing_pad.DrawingPad(unsure, refusing)
    unsure_pad.strokes = [[list(point) for point in stroke] for stroke in reader.EXAMPLE_STROKES]
    assert unsure_pad.reading["best"]["verdict"] == "not sure" and unsure_pad.saliency["digit"] == 4
    assert unsure_pad.saliency["model"] == "ensemble of cnn_basic, dnn" and len(unsure_pad.saliency["heatmap"]) == 784


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


# ==================== Teaching the pad a person's hand ================================


# A writer's 7 drawn like a Z with a foot and a 1 with a long flag, in pad pixels: the trained readers misread both.
Z_SEVEN = [[(60, 60), (220, 60), (60, 220), (220, 220)]]
FLAG_ONE = [[(60, 130), (170, 40), (170, 240)]]


def wobbled(strokes, seed, amount=10):
    """`strokes` drawn again by the same hand: each point moved by up to `amount` pad pixels each way."""
    rng = np.random.default_rng(seed)
    return [[(x + dx, y + dy) for (x, y), (dx, dy) in zip(stroke, rng.uniform(-amount, amount, (len(stroke), 2)))]
            for stroke in strokes]


def as_sent(strokes):
    """Strokes as the browser sends them: lists of [x, y] lists."""
    return [[[float(x), float(y)] for x, y in stroke] for stroke in strokes]


def test_short_text_gives_a_verdict_in_a_few_characters():
    probabilities = np.full(10, 0.1)
    assert drawing_pad.short_text(reader.Reading("digit", probabilities, 1.0, (7,))) == "7"
    assert drawing_pad.short_text(reader.Reading("not sure", probabilities, 1.0, (7, 1))) == "7 or 1?"
    assert drawing_pad.short_text(reader.Reading("not a digit", probabilities, 0.0)) == "not a digit"


def test_teaching_the_pad_a_hand_it_misreads(best_reader, ensemble_reader):
    pad = drawing_pad.DrawingPad(best_reader, ensemble_reader)
    assert pad.best_reader is best_reader and pad.adapt_seconds is None and len(pad.examples[1]) == 0
    # New drawings of both patterns, never taught: the trained readers do not read them as the writer meant.
    new_drawings = [(wobbled(strokes, seed), digit) for strokes, digit in ((Z_SEVEN, 7), (FLAG_ONE, 1))
                    for seed in (21, 22, 23)]
    for strokes, digit in new_drawings:
        untaught = pad.read(strokes)
        assert untaught.best.digit != digit and untaught.ensemble.digit != digit, (digit, untaught.best.text,
                                                                                   untaught.ensemble.text)

    # Each pattern taught twice (as drawn, and once a little varied): every teach adapts from the trained readers.
    taught = [(Z_SEVEN, 7), (FLAG_ONE, 1), (wobbled(Z_SEVEN, 1), 7), (wobbled(FLAG_ONE, 1), 1)]
    for count, (strokes, digit) in enumerate(taught, start=1):
        reading = pad.teach(strokes, digit)
        assert isinstance(reading, drawing_pad.DigitReading) and len(pad.examples[1]) == count
    assert reading.best.digit == 1 and 0 < pad.adapt_seconds < 30

    # A flagged 1 can look like a 7 to anyone: an adapted reader may still say "not sure: 1 or 7" to a new drawing
    # of it, but the taught digit must now come first, and most new drawings must be read as taught outright.
    read_as_taught = 0
    for strokes, digit in new_drawings:
        adapted = pad.read(strokes)
        for answer in (adapted.best, adapted.ensemble):
            assert answer.candidates and answer.candidates[0] == digit, (digit, adapted.best.text, adapted.ensemble.text)
            read_as_taught += answer.digit == digit
        assert adapted.best_label == "best model (cnn_basic), adapted"
        assert adapted.ensemble_label == "ensemble of 2, adapted"
    assert read_as_taught > len(new_drawings)  # of 2 readings per drawing
    four = pad.read(reader.EXAMPLE_STROKES)  # the other digits are still read as before
    assert four.best.digit == 4 and four.ensemble.digit == 4, (four.best.text, four.ensemble.text)

    # The examples are the prepared drawings, and the readers in use are the trained ones adapted to all of them.
    images, digits = pad.examples
    np.testing.assert_array_equal(images, np.stack([reader.prepare_strokes(strokes) for strokes, _ in taught]))
    assert images.shape == (4, 28, 28) and digits.tolist() == [7, 1, 7, 1]
    assert pad.base_best_reader is best_reader and pad.base_ensemble_reader is ensemble_reader
    assert not best_reader.heads and not ensemble_reader.heads  # the trained readers themselves are untouched
    checked = np.stack([reader.prepare_strokes(strokes) for strokes, _ in new_drawings]
                       + [reader.prepare_strokes(reader.EXAMPLE_STROKES)])
    for in_use, base in ((pad.best_reader, best_reader), (pad.ensemble_reader, ensemble_reader)):
        expected = base.adapted(images, digits)
        assert [r.as_dict() for r in in_use.read(checked)] == [r.as_dict() for r in expected.read(checked)]
        np.testing.assert_array_equal(in_use.examples[0], images)


def test_the_page_teaches_with_a_command(best_reader, ensemble_reader):
    pad = drawing_pad.DrawingPad(best_reader, ensemble_reader)
    assert pad.teach_state == {"count": 0, "examples": [], "note": "", "seconds": None, "message": "",
                               "error": False, "done": None}
    pad.strokes = as_sent(Z_SEVEN)
    before = pad.read(Z_SEVEN)
    assert "adapted" not in pad.reading
    pad.command = {"action": "teach", "digit": 7, "id": 1}

    state, seconds = pad.teach_state, pad.adapt_seconds
    assert state["done"] == 1 and state["error"] is False and state["count"] == 1
    assert state["message"].startswith("taught: that was a 7; 1 example in all, adapted in ")
    assert state["message"] == f"taught: that was a 7; 1 example in all, adapted in {seconds:.2f} s"
    assert state["note"] == f"adapted to your 1 example (adapted in {seconds:.2f} s)"
    assert 0 < state["seconds"] < 30 and state["seconds"] == round(seconds, 3)
    (example,) = state["examples"]
    assert example["digit"] == 7 and len(example["pixels"]) == 28 * 28
    np.testing.assert_allclose(example["pixels"], reader.prepare_strokes(Z_SEVEN).ravel(), atol=0.005)
    after = pad.read(Z_SEVEN)
    assert example["best"] == {"before": drawing_pad.short_text(before.best),
                               "after": drawing_pad.short_text(after.best)}
    assert example["ensemble"] == {"before": drawing_pad.short_text(before.ensemble),
                                   "after": drawing_pad.short_text(after.ensemble)}
    assert example["best"]["before"] != "7" and example["best"]["after"] == "7"
    # The drawing on the pad is read again by the adapted readers.
    assert pad.reading["adapted"] == 1 and pad.reading["strokes"] == 1
    assert pad.reading["best"]["label"] == "best model (cnn_basic), adapted"
    assert pad.reading["ensemble"]["label"] == "ensemble of 2, adapted"
    assert pad.reading["best"]["text"] == after.best.text and pad.reading["ensemble"]["text"] == after.ensemble.text
    # And where the adapted best model looked for the 7 it now reads: its re-fitted last layer is explained.
    looked = pad.saliency
    assert looked["model"] == "cnn_basic, adapted" and looked["digit"] == 7 and looked["strokes"] == 1
    prepared = reader.prepare_strokes(Z_SEVEN)
    np.testing.assert_allclose(looked["heatmap"], drawing_pad.where_it_looked(prepared, pad.best_reader, 7).ravel(),
                               atol=5e-4)
    trained = drawing_pad.where_it_looked(prepared, best_reader, 7).ravel()
    assert np.abs(np.asarray(looked["heatmap"]) - trained).max() > 0.01


def test_examples_are_saved_reset_and_loaded_again(best_reader, ensemble_reader, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pad = drawing_pad.DrawingPad(best_reader, ensemble_reader)
    pad.teach(Z_SEVEN, 7)
    pad.teach(FLAG_ONE, 1)
    strokes = wobbled(Z_SEVEN, 5)
    pad.strokes = as_sent(strokes)
    taught_state, taught_reading = pad.teach_state, pad.reading
    images, digits = pad.examples

    pad.command = {"action": "save", "path": "my_digits", "id": 2}  # no suffix: .json, in the working folder
    path = tmp_path / "my_digits.json"
    assert pad.teach_state["message"] == f"saved 2 examples to {path}"
    assert pad.teach_state["error"] is False and pad.teach_state["done"] == 2
    assert sorted(tmp_path.iterdir()) == [path]  # and no half-written file left beside it
    saved_images, saved_digits = reader.load_examples(path)
    assert saved_digits.tolist() == [7, 1]
    np.testing.assert_allclose(saved_images, images, atol=0.5 / 255)

    pad.command = {"action": "reset", "id": 3}
    state = pad.teach_state
    assert state["message"] == "reset: the trained readers again, no examples" and state["error"] is False
    assert state["count"] == 0 and state["examples"] == [] and state["note"] == "" and state["seconds"] is None
    base = drawing_pad.read_drawing(strokes, best_reader, ensemble_reader)
    assert "adapted" not in pad.reading and pad.reading["best"]["label"] == "best model (cnn_basic)"
    assert pad.reading["best"]["text"] == base.best.text and pad.reading["ensemble"]["text"] == base.ensemble.text

    pad.command = {"action": "load", "path": "my_digits.json", "id": 4}
    state = pad.teach_state
    assert state["message"] == f"loaded 2 examples from {path}" and state["error"] is False and state["done"] == 4
    loaded_images, loaded_digits = pad.examples
    assert loaded_digits.tolist() == [7, 1]
    np.testing.assert_allclose(loaded_images, images, atol=0.5 / 255)
    assert state["count"] == 2 and state["note"].startswith("adapted to your 2 examples (adapted in ")
    for loaded, taught in zip(state["examples"], taught_state["examples"]):
        assert {key: loaded[key] for key in ("digit", "best", "ensemble")} == \
               {key: taught[key] for key in ("digit", "best", "ensemble")}
        np.testing.assert_allclose(loaded["pixels"], taught["pixels"], atol=0.01 + 1e-9)
    # The drawing on the pad reads as it did before saving (the file keeps pixels to 1/255).
    assert pad.reading["adapted"] == 2
    for key in ("best", "ensemble"):
        now, then = pad.reading[key], taught_reading[key]
        assert {k: now[k] for k in ("label", "text", "verdict", "digit", "candidates")} == \
               {k: then[k] for k in ("label", "text", "verdict", "digit", "candidates")}
        np.testing.assert_allclose(now["probabilities"], then["probabilities"], atol=1e-3)


def test_reset_returns_to_the_trained_readers(best_reader, ensemble_reader):
    pad = drawing_pad.DrawingPad(best_reader, ensemble_reader)
    pad.teach(Z_SEVEN, 7)
    assert pad.best_reader is not best_reader and pad.adapt_seconds is not None
    pad.reset_examples()
    assert pad.best_reader is pad.base_best_reader is best_reader
    assert pad.ensemble_reader is pad.base_ensemble_reader is ensemble_reader
    images, digits = pad.examples
    assert images.shape == (0, 28, 28) and digits.shape == (0,) and pad.adapt_seconds is None
    assert pad.teach_state["count"] == 0 and pad.teach_state["note"] == ""
    assert pad.read(Z_SEVEN).best_label == "best model (cnn_basic)"
    pad.teach(FLAG_ONE, 1)  # taught anew: the examples before the reset are gone
    assert pad.examples[1].tolist() == [1]


SAY_THE_DIGIT = "say which digit the drawing was with a whole number from 0 to 9."
EXAMPLES_HINT = "save the examples again from the drawing pad's teach mode (or reader.save_examples)"


@pytest.mark.parametrize("command, expected", [
    ({"action": "teach", "digit": 12}, "digit 12: " + SAY_THE_DIGIT),
    ({"action": "teach", "digit": "7"}, "digit '7': " + SAY_THE_DIGIT),
    ({"action": "teach", "digit": True}, "digit True: " + SAY_THE_DIGIT),
    ({"action": "teach", "digit": 7, "strokes": []}, "nothing is drawn on the pad; draw the digit first, then say "
                                                     "which it was."),
    ({"action": "teach", "digit": 7, "strokes": [[[-100, -100]]]}, "the drawing is empty (no stroke on the pad); "
                                                                   "draw a digit on it."),
    ({"action": "save", "path": "my_digits", "examples": 0}, "no examples to save yet; draw a digit, say which it "
                                                            "was, then save."),
    ({"action": "save", "path": "  "}, "no file name; type one for the examples, e.g. my_digits.json."),
    ({"action": "save"}, "no file name; type one for the examples, e.g. my_digits.json."),
    ({"action": "save", "path": "missing/my_digits"}, "{folder}/missing: no such folder; create it or save in an "
                                                      "existing folder."),
    ({"action": "load", "path": "nowhere"}, "{folder}/nowhere.json: no such file of examples; type the name they "
                                            "were saved under."),
    ({"action": "load", "path": "garbled.json"}, "{folder}/garbled.json: cannot be read as JSON ("),
    ({"action": "load", "path": "other.json"}, "{folder}/other.json: not a file of handwriting examples (no "
                                               "\"format\": \"handwriting examples\"); " + EXAMPLES_HINT + "."),
    ({"action": "draw"}, "unknown command 'draw'; the pad knows teach, save, load and reset."),
])
def test_a_bad_command_is_one_line_on_the_page(best_reader, ensemble_reader, tmp_path, monkeypatch, command, expected):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "garbled.json").write_text("{\"format\": \"handwriting examples\", ")  # cut off: not JSON
    (tmp_path / "other.json").write_text(json.dumps({"members": ["dnn"]}))  # JSON, but not examples
    pad = drawing_pad.DrawingPad(best_reader, ensemble_reader)
    command = dict(command)
    if command.pop("examples", 1):
        pad.teach(Z_SEVEN, 7)
    pad.strokes = command.pop("strokes", as_sent(FLAG_ONE))
    images, digits = pad.examples
    in_use, examples_shown = pad.best_reader, pad.teach_state["examples"]

    pad.command = {**command, "id": 5}  # raises nothing: the widget says what went wrong on the page
    state = pad.teach_state
    assert state["error"] is True and state["done"] == 5 and "\n" not in state["message"]
    # Where there is a file, the message names it ({folder}: the working folder, where a relative name points).
    names_a_file, expected = "{folder}" in expected, expected.format(folder=tmp_path)
    assert state["message"].startswith(expected) and (expected.endswith("(") or state["message"] == expected)
    assert (str(tmp_path) in state["message"]) == names_a_file
    # The examples, and the readers adapted to them, are as they were.
    assert pad.best_reader is in_use and state["examples"] == examples_shown and state["count"] == len(digits)
    np.testing.assert_array_equal(pad.examples[0], images)
    np.testing.assert_array_equal(pad.examples[1], digits)


def test_the_methods_raise_for_the_same_mistakes(best_reader, ensemble_reader, tmp_path):
    pad = drawing_pad.DrawingPad(best_reader, ensemble_reader)
    with pytest.raises(ValueError, match="no examples to save yet"):
        pad.save_examples(tmp_path / "my_digits.json")
    with pytest.raises(ValueError, match="nothing is drawn on the pad"):
        pad.teach(None, 7)
    with pytest.raises(ValueError, match=r"digit 12: say which digit .* from 0 to 9"):
        pad.teach(Z_SEVEN, 12)
    with pytest.raises(ValueError, match="no file name"):
        pad.load_examples("")
    pad.teach(Z_SEVEN, 7)
    with pytest.raises(FileNotFoundError, match=re.escape(f"{tmp_path / 'missing'}: no such folder")):
        pad.save_examples(tmp_path / "missing" / "my_digits.json")
    with pytest.raises(FileNotFoundError, match=re.escape(f"{tmp_path / 'nowhere.json'}: no such file of examples")):
        pad.load_examples(tmp_path / "nowhere")
    (tmp_path / "other.json").write_text("[1, 2, 3]")
    with pytest.raises(ValueError, match="not a file of handwriting examples"):
        pad.load_examples(tmp_path / "other.json")
    assert pad.examples[1].tolist() == [7]
