"""The models exported to ONNX (reader.export_onnx, `make onnx`): read without TensorFlow, they answer as Keras does.

The committed exports are checked against their Keras models on all 10,000 MNIST test images (slow), and
predict.py is run on them in a process of its own, where TensorFlow must never be imported. The rest uses
tiny models exported here: a damaged or stale export is never read silently, and an export that fails
leaves no half-written file.
"""

import json
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
from PIL import Image

import reader
from conftest import PROJECT_ROOT

pytest.importorskip("onnxruntime", reason="install requirements.txt (onnxruntime) to read the ONNX exports")

# Keras trips over NumPy 2's copy keyword when it turns a variable into an array; that is Keras' business.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

MODELS_DIR = PROJECT_ROOT / "saved_models"
SURE = {7: 0.981, 1: 0.012, 9: 0.004}
UNSURE = {7: 0.55, 1: 0.40, 9: 0.02}
# What ONNX Runtime and TensorFlow may differ by (their kernels sum in other orders): measured, at most
# 2e-6 on the calibrated probabilities of the committed models; 1e-4, the bound, still catches a wrong graph.
PROBABILITY_TOLERANCE = 1e-4


def committed_members():
    """The saved reader's members, or a skip when the full run or `make onnx` has not written them."""
    if not (MODELS_DIR / reader.READER_FILE).is_file():
        pytest.skip(f"no {MODELS_DIR / reader.READER_FILE}; run `make run` to fit and save the reader")
    members = reader.read_json(MODELS_DIR / reader.READER_FILE)["members"]
    missing = [name for name in members if not (MODELS_DIR / f"{name}.onnx").is_file()]
    if missing:
        pytest.skip(f"no saved_models/{missing[0]}.onnx; run `make onnx` to export the reader's models")
    return members


def keras_reader(members):
    """The committed reader with its Keras models, as before the ONNX exports."""
    settings = reader.read_json(MODELS_DIR / reader.READER_FILE)
    models = {name: reader.load_model(MODELS_DIR / f"{name}.keras") for name in members}
    return reader.Reader.from_settings(settings, models)


def onnx_reader():
    """The committed reader as predict.py loads it; a stale export fails the test instead of falling back."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", reader.StaleExportWarning)
        loaded = reader.load_reader(MODELS_DIR)
    assert all(isinstance(model, reader.OnnxModel) for model in loaded.models.values())
    return loaded


def check_readings_agree(onnx_readings, keras_readings):
    """Same digit for every input, calibrated probabilities within the tolerance, the same verdicts."""
    onnx_probabilities = np.stack([reading.probabilities for reading in onnx_readings])
    keras_probabilities = np.stack([reading.probabilities for reading in keras_readings])
    np.testing.assert_array_equal(onnx_probabilities.argmax(axis=1), keras_probabilities.argmax(axis=1))
    np.testing.assert_allclose(onnx_probabilities, keras_probabilities, rtol=0, atol=PROBABILITY_TOLERANCE)
    np.testing.assert_allclose([reading.score for reading in onnx_readings],
                               [reading.score for reading in keras_readings], rtol=0, atol=PROBABILITY_TOLERANCE)
    assert [reading.verdict for reading in onnx_readings] == [reading.verdict for reading in keras_readings]
    assert [reading.candidates for reading in onnx_readings] == [reading.candidates for reading in keras_readings]


@pytest.mark.slow
def test_onnx_and_keras_agree_on_every_mnist_test_image(mnist_dir):
    import helpers

    members = committed_members()
    _, (test_images, _) = helpers.load_mnist(mnist_dir)
    inputs = helpers.to_model_input(test_images)
    assert len(inputs) == 10_000
    from_onnx, from_keras = onnx_reader(), keras_reader(members)
    onnx_outputs, keras_outputs = from_onnx.outputs(inputs), from_keras.outputs(inputs)
    # Each member alone, calibrated with its own temperature, as predict.py --model reads it.
    for name, (_, onnx_logits), (_, keras_logits) in zip(members, onnx_outputs, keras_outputs):
        temperature = from_onnx.temperatures[name]
        onnx_probabilities = reader.softmax(onnx_logits, temperature)
        keras_probabilities = reader.softmax(keras_logits, temperature)
        np.testing.assert_array_equal(onnx_probabilities.argmax(axis=1), keras_probabilities.argmax(axis=1),
                                      err_msg=name)
        np.testing.assert_allclose(onnx_probabilities, keras_probabilities, rtol=0, atol=PROBABILITY_TOLERANCE,
                                   err_msg=name)
    # The ensemble's verdicts, "not a digit" refusals included.
    check_readings_agree(from_onnx.read_outputs(onnx_outputs), from_keras.read_outputs(keras_outputs))
    # Adapted to a few digits of one hand (here three test digits of each class), both re-fit the same last layers.
    _, (_, test_labels) = helpers.load_mnist(mnist_dir)
    examples = np.concatenate([np.flatnonzero(test_labels == digit)[:3] for digit in range(10)])
    adapted_onnx = from_onnx.adapted(inputs[examples], test_labels[examples])
    adapted_keras = from_keras.adapted(inputs[examples], test_labels[examples])
    check_readings_agree(adapted_onnx.read(inputs[:1000]), adapted_keras.read(inputs[:1000]))


def draw_digit(path):
    """A 4 drawn with the pad's example strokes, dark on white as a scan would be, saved as PNG."""
    drawing = reader.strokes_to_image(reader.EXAMPLE_STROKES)
    Image.fromarray(np.round(255 * (1.0 - drawing)).astype(np.uint8)).save(path)
    return path


# Runs predict.main in a fresh process and then says which modules it had imported.
PREDICT_IN_A_PROCESS = """
import json, sys
sys.path.insert(0, {root!r})
import predict
status = predict.main({arguments!r})
loaded = sorted({{name.split(".")[0] for name in sys.modules}} & {{"tensorflow", "keras", "helpers", "drawing_pad",
                                                                  "anywidget", "matplotlib"}})
print(json.dumps({{"status": status, "loaded": loaded}}))
"""


def run_predict_in_a_process(arguments):
    """(exit status, the JSON readings it printed, the modules it loaded that reading needs not, stderr)."""
    code = PREDICT_IN_A_PROCESS.format(root=str(PROJECT_ROOT), arguments=[str(argument) for argument in arguments])
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    *readings, summary = result.stdout.strip().splitlines()
    summary = json.loads(summary)
    return summary["status"], [json.loads(line) for line in readings], summary["loaded"], result.stderr


def test_predict_reads_with_onnx_without_tensorflow_and_answers_as_keras(tmp_path, capsys):
    import predict

    members = committed_members()
    digit = draw_digit(tmp_path / "four.png")
    one_model = MODELS_DIR / f"{members[0]}.keras"
    # The same folder without the exports: every model is read with Keras.
    keras_dir = tmp_path / "keras_only"
    keras_dir.mkdir()
    shutil.copy(MODELS_DIR / reader.READER_FILE, keras_dir)
    for name in members:
        shutil.copy(MODELS_DIR / f"{name}.keras", keras_dir)
        shutil.copy(MODELS_DIR / f"{name}.calibration.json", keras_dir)
    for onnx_options, keras_options in ((["--models-dir", MODELS_DIR], ["--models-dir", keras_dir]),
                                        (["--model", one_model], ["--model", keras_dir / one_model.name])):
        status, onnx_readings, loaded, errors = run_predict_in_a_process([digit, *onnx_options, "--json"])
        assert (status, loaded, errors) == (0, [], "")
        assert predict.main([str(digit), *map(str, keras_options), "--json"]) == 0
        captured = capsys.readouterr()
        assert captured.err == ""
        keras_readings = [json.loads(line) for line in captured.out.splitlines()]
        assert len(onnx_readings) == len(keras_readings) == 1
        onnx_reading, keras_reading = onnx_readings[0], keras_readings[0]
        for key in ("file", "digit", "verdict", "candidates", "threshold"):
            assert onnx_reading[key] == keras_reading[key], (onnx_options, key)
        np.testing.assert_allclose(onnx_reading["probabilities"], keras_reading["probabilities"], rtol=0,
                                   atol=PROBABILITY_TOLERANCE)
        assert onnx_reading["score"] == pytest.approx(keras_reading["score"], abs=PROBABILITY_TOLERANCE)


# ==================== Tiny exports: damaged, stale, half-written ======================


@pytest.fixture
def tiny_folder(tmp_path, fixed_model):
    """A saved reader of one fixed model (it reads every image as a sure 7), exported to ONNX."""
    fixed_model(SURE, "tiny").save(tmp_path / "tiny.keras")
    settings = {"members": ["tiny"], "temperatures": {"tiny": 1.0}, "ensemble_temperature": 1.0,
                "score": "probability", "threshold": 0.5}
    (tmp_path / reader.READER_FILE).write_text(json.dumps(settings))
    assert reader.export_onnx(tmp_path) == [tmp_path / "tiny.onnx"]
    return tmp_path


def test_an_exported_model_is_read_with_onnx_runtime(tiny_folder):
    loaded = reader.load_reader(tiny_folder)
    model = loaded.models["tiny"]
    assert isinstance(model, reader.OnnxModel)
    assert model.source == reader.source_fingerprint(tiny_folder / "tiny.keras")
    reading = loaded.read(np.zeros((1, 28, 28)))[0]
    assert reading.verdict == "digit" and reading.digit == 7
    np.testing.assert_allclose(reading.probabilities[[7, 1, 9]], [0.981, 0.012, 0.004], atol=1e-6)
    # One model with --model reads its export too, and learns a hand from examples as the Keras model does.
    single = reader.load_single_model_reader(tiny_folder / "tiny.keras")
    assert isinstance(single.models["tiny"], reader.OnnxModel)
    four = reader.prepare_strokes(reader.EXAMPLE_STROKES)
    taught = single.adapted(np.stack([four] * 3), [4, 4, 4]).read(four)[0]
    keras_model = reader.load_model(tiny_folder / "tiny.keras")
    taught_keras = reader.Reader({"tiny": keras_model}, {"tiny": 1.0}).adapted(np.stack([four] * 3), [4, 4, 4]).read(four)[0]
    assert taught.digit == taught_keras.digit == 4
    np.testing.assert_allclose(taught.probabilities, taught_keras.probabilities, atol=1e-5)


def test_a_damaged_export_stops_with_one_line_naming_it(tiny_folder, capsys):
    import predict

    (tiny_folder / "tiny.onnx").write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ValueError, match=r"tiny\.onnx: cannot be read as a model reader\.export_onnx wrote.*"
                                         r"make onnx.*delete it to read tiny\.keras with Keras"):
        reader.load_reader(tiny_folder)
    image = draw_digit(tiny_folder / "four.png")
    for options in (["--models-dir", tiny_folder], ["--model", tiny_folder / "tiny.keras"]):
        status = predict.main([str(image), *map(str, options)])
        captured = capsys.readouterr()
        assert status == 2 and captured.out == ""
        errors = captured.err.strip().splitlines()
        assert len(errors) == 1 and "Traceback" not in captured.err
        assert errors[0].startswith(f"predict.py: error: {tiny_folder / 'tiny.onnx'}: cannot be read") and \
            "run `make onnx`" in errors[0]
    # An ONNX file that export_onnx did not write (no last layer in its metadata) is refused alike.
    import keras

    reader.load_model(tiny_folder / "tiny.keras").export(
        tiny_folder / "tiny.onnx", format="onnx", verbose=False,
        input_signature=[keras.InputSpec(shape=(None, 28, 28, 1), dtype="float32")])
    with pytest.raises(ValueError, match=r"tiny\.onnx: cannot be read as a model reader\.export_onnx wrote \(KeyError\)"):
        reader.load_reader(tiny_folder)


def test_a_stale_export_is_not_read_silently(tiny_folder, fixed_model, capsys):
    import predict

    # The model is saved again (retrained): the export beside it was made from the old file.
    fixed_model(UNSURE, "tiny").save(tiny_folder / "tiny.keras")
    with pytest.warns(reader.StaleExportWarning, match=r"tiny\.onnx: exported from another version of tiny\.keras"):
        loaded = reader.load_reader(tiny_folder)
    assert not isinstance(loaded.models["tiny"], reader.OnnxModel)
    assert loaded.read(np.zeros((1, 28, 28)))[0].verdict == "not sure"  # the new model's answer, not the old one's
    image = draw_digit(tiny_folder / "four.png")
    assert predict.main([str(image), "--models-dir", str(tiny_folder)]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(f"{image}: not sure: 7 or 1")
    assert captured.err == (f"predict.py: note: {tiny_folder / 'tiny.onnx'}: exported from another version of "
                            "tiny.keras, so that file is read with Keras instead; run `make onnx` to export it again.\n")
    # Exported again, it is read with ONNX Runtime, and gives the new model's answer.
    reader.export_onnx(tiny_folder, names=["tiny"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", reader.StaleExportWarning)
        loaded = reader.load_reader(tiny_folder)
    assert isinstance(loaded.models["tiny"], reader.OnnxModel)
    assert loaded.read(np.zeros((1, 28, 28)))[0].verdict == "not sure"


def test_an_export_that_fails_leaves_no_half_written_file(tiny_folder, monkeypatch):
    import onnx

    before = (tiny_folder / "tiny.onnx").read_bytes()

    def failing_save(model, path, *arguments, **options):
        with open(path, "wb") as file:  # half a file, then the disk is full
            file.write(model.SerializeToString()[:1000])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(onnx, "save", failing_save)
    with pytest.raises(OSError, match="No space left"):
        reader.export_onnx(tiny_folder)
    assert (tiny_folder / "tiny.onnx").read_bytes() == before  # the previous export, whole
    assert sorted(path.name for path in tiny_folder.iterdir()) == ["reader.json", "tiny.keras", "tiny.onnx"]
    (tiny_folder / "tiny.onnx").unlink()
    with pytest.raises(OSError, match="No space left"):
        reader.export_onnx(tiny_folder)
    assert sorted(path.name for path in tiny_folder.iterdir()) == ["reader.json", "tiny.keras"]


def test_importing_the_reader_imports_no_tensorflow():
    code = f"""
import sys
sys.path.insert(0, {str(PROJECT_ROOT)!r})
sys.argv = ["predict.py"]
import predict, reader
print(sorted({{name.split(".")[0] for name in sys.modules}} & {{"tensorflow", "keras", "onnx", "tf2onnx"}}))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "[]"
