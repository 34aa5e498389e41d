"""The command line predict.py: verdicts in words and in JSON, the saved reader or one model (with its calibration
file), each kind of bad input, exit codes.

Each run of predict.py as a process imports TensorFlow (5-10 s), so the cases share runs, and what needs no
process of its own (the wording, the options, the reader's files) calls predict.main in this one.
"""

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageDraw

from conftest import PROJECT_ROOT

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Keras' own model.save trips over NumPy 2's copy keyword; that is Keras' business, not this test's.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

JSON_KEYS = {"file", "digit", "verdict", "candidates", "probabilities", "score", "threshold"}
# What fixed_model's models answer for every image (see conftest.py).
SURE = {7: 0.981, 1: 0.012, 9: 0.004}
UNSURE = {7: 0.55, 1: 0.40, 9: 0.02}


@pytest.fixture(scope="module")
def files(tmp_path_factory, fixed_model):
    """Two drawn digits, a blank image, a text file named .png, a tiny model, two fixed ones and a corrupt one."""
    import keras

    folder = tmp_path_factory.mktemp("cli")
    for name, box in (("zero.png", (50, 30, 150, 170)), ("other.png", (60, 20, 140, 180))):
        image = Image.new("L", (200, 200), 255)
        ImageDraw.Draw(image).ellipse(box, outline=0, width=14)
        image.save(folder / name)
    Image.new("L", (64, 64), 255).save(folder / "blank.png")
    (folder / "x.png").write_text("this is not an image")
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(28, 28, 1))
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(inputs)))
    model.save(folder / "tiny.keras")
    fixed_model(SURE, "sure").save(folder / "sure.keras")
    fixed_model(UNSURE, "unsure").save(folder / "unsure.keras")
    (folder / "corrupt.keras").write_bytes(np.random.default_rng(0).bytes(2048))
    return folder


def run_cli(*arguments, cwd):
    return subprocess.run([sys.executable, str(PROJECT_ROOT / "predict.py"), *map(str, arguments)],
                          capture_output=True, text=True, cwd=cwd, timeout=300)


def run_main(arguments, capsys):
    """predict.main in this process: (exit status, stdout lines, stderr lines)."""
    import predict

    status = predict.main([str(argument) for argument in arguments])
    captured = capsys.readouterr()
    return status, captured.out.splitlines(), captured.err.splitlines()


def check_json_line(line):
    """One --json line: the documented keys and types, a digit exactly when the verdict is "digit"."""
    entry = json.loads(line)
    assert set(entry) == JSON_KEYS
    assert isinstance(entry["file"], str) and entry["verdict"] in ("digit", "not sure", "not a digit")
    assert len(entry["probabilities"]) == 10 and all(isinstance(value, float) for value in entry["probabilities"])
    assert sum(entry["probabilities"]) == pytest.approx(1.0, abs=1e-4)
    assert isinstance(entry["score"], float)
    assert entry["threshold"] is None or isinstance(entry["threshold"], float)
    assert all(isinstance(candidate, int) for candidate in entry["candidates"])
    if entry["verdict"] == "digit":
        assert isinstance(entry["digit"], int) and entry["candidates"] == [entry["digit"]]
        assert entry["digit"] == int(np.argmax(entry["probabilities"]))
    else:
        assert entry["digit"] is None
        assert len(entry["candidates"]) == (2 if entry["verdict"] == "not sure" else 0)
    return entry


def test_help_explains_the_command(tmp_path):
    result = run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0
    assert "--model" in result.stdout and "--models-dir" in result.stdout and "IMAGE" in result.stdout
    assert "example" in result.stdout and "not a digit" in result.stdout and "not sure" in result.stdout
    assert "--json" in result.stdout and "exit status" in result.stdout
    assert "--ink {auto,dark,light}" in result.stdout and "dark ink on light paper" in result.stdout


def test_good_images_print_one_line_each(files):
    result = run_cli("zero.png", "other.png", "--model", "tiny.keras", cwd=files)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["zero.png", "other.png"]
    for line in lines:
        # "name: 7  (7 98.1%, ...)" or "name: not sure: 7 or 1 ...  (7 55.0%, ...)": the model's top three last.
        verdict, ranking = line.split(": ", 1)[1].rsplit("  (", 1)
        ranking = ranking.rstrip(")").split(", ")
        percentages = [float(entry.split()[1].rstrip("%")) for entry in ranking]
        assert len(ranking) == 3 and percentages == sorted(percentages, reverse=True)
        assert 0 < sum(percentages) <= 100.1
        # Without a calibration file the model refuses nothing: a digit, or not sure between two.
        answer = re.fullmatch(r"(\d)|not sure: (\d) or \d.*", verdict)
        assert answer, line
        assert ranking[0].startswith((answer.group(1) or answer.group(2)) + " ")
    assert result.stderr.strip() == ""  # TensorFlow's start-up chatter stays hidden


def test_verdicts_are_worded_for_a_person(files, capsys, monkeypatch):
    monkeypatch.chdir(files)
    status, lines, errors = run_main(["zero.png", "--model", "sure.keras"], capsys)
    assert (status, lines, errors) == (0, ["zero.png: 7  (7 98.1%, 1 1.2%, 9 0.4%)"], [])
    status, lines, errors = run_main(["zero.png", "--model", "unsure.keras"], capsys)
    assert status == 0 and errors == [] and len(lines) == 1
    assert lines[0].startswith("zero.png: not sure: 7 or 1") and lines[0].endswith("  (7 55.0%, 1 40.0%, 9 2.0%)")


def test_bad_images_are_reported_and_the_good_one_still_read(files):
    result = run_cli("missing.png", "x.png", "blank.png", "zero.png", "--model", "tiny.keras", cwd=files)
    assert result.returncode == 1
    assert result.stdout.startswith("zero.png: ") and result.stdout.count("\n") == 1
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 3 and "Traceback" not in result.stderr
    assert all(line.startswith("predict.py: error: ") for line in errors)
    assert "missing.png: no such file" in errors[0]
    assert "x.png: not an image" in errors[1]
    assert "blank.png: the image is blank" in errors[2]


def test_unreadable_or_missing_model(files):
    corrupt = run_cli("zero.png", "--model", "corrupt.keras", cwd=files)
    assert corrupt.returncode == 2 and "Traceback" not in corrupt.stderr and corrupt.stdout == ""
    assert corrupt.stderr.strip().count("\n") == 0
    assert corrupt.stderr.startswith("predict.py: error: corrupt.keras: cannot be loaded as a Keras model")
    missing = run_cli("zero.png", "--model", "nowhere.keras", cwd=files)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr and missing.stdout == ""
    assert missing.stderr.strip() == "predict.py: error: nowhere.keras: no such saved model; " \
                                     "run `make run` to train and save the models."


def test_json_prints_one_object_per_image_and_nothing_else(files):
    result = run_cli("zero.png", "blank.png", "other.png", "--model", "tiny.keras", "--json", cwd=files)
    assert result.returncode == 1  # the blank image got no verdict
    # Every line of stdout is JSON (no TensorFlow chatter); the blank image's error goes to stderr.
    entries = [check_json_line(line) for line in result.stdout.splitlines()]
    assert [entry["file"] for entry in entries] == ["zero.png", "other.png"]
    assert all(entry["threshold"] is None and entry["verdict"] != "not a digit" for entry in entries)
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("predict.py: error: blank.png: the image is blank")


def write_reader(folder, threshold, members=("tiny",)):
    """A reader.json for the models in `folder`, as model.ipynb writes one: temperature 1, the top probability."""
    settings = {"members": list(members), "temperatures": {name: 1.0 for name in members},
                "ensemble_temperature": 1.0, "score": "probability", "threshold": threshold}
    (folder / "reader.json").write_text(json.dumps(settings))


def test_the_saved_reader_refuses_what_scores_below_its_threshold(files, tmp_path, capsys):
    shutil.copy(files / "tiny.keras", tmp_path / "tiny.keras")
    # The untrained model is never 99% sure, so this reader refuses every image.
    write_reader(tmp_path, 0.99)
    images = [files / "zero.png", files / "other.png"]
    status, lines, errors = run_main([*images, "--models-dir", tmp_path], capsys)
    assert status == 0 and errors == [] and len(lines) == 2
    for image, line in zip(images, lines):
        assert re.fullmatch(rf"{re.escape(str(image))}: not a digit  \(looks most like \d at \d+\.\d%; "
                            r"score 0\.\d+ below 0\.99\)", line), line
    status, lines, errors = run_main([*images, "--models-dir", tmp_path, "--json"], capsys)
    assert status == 0 and errors == []
    for image, line in zip(images, lines):
        entry = check_json_line(line)
        assert entry["file"] == str(image) and entry["verdict"] == "not a digit" and entry["digit"] is None
        assert entry["candidates"] == [] and entry["threshold"] == 0.99 and entry["score"] < 0.99


def test_a_missing_or_broken_reader_stops_with_one_line(files, tmp_path, capsys):
    import predict

    assert predict.parse_arguments(["seven.png"]).models_dir == PROJECT_ROOT / "saved_models"
    zero = files / "zero.png"
    status, lines, errors = run_main([zero, "--models-dir", tmp_path], capsys)
    assert status == 2 and lines == [] and len(errors) == 1
    assert errors[0].startswith(f"predict.py: error: {tmp_path / 'reader.json'}: no such reader settings file")
    assert errors[0].endswith("Pass --model PATH to read with one saved model.")
    (tmp_path / "reader.json").write_text("{not json")
    status, lines, errors = run_main([zero, "--models-dir", tmp_path], capsys)
    assert status == 2 and lines == [] and len(errors) == 1
    assert f"{tmp_path / 'reader.json'}: cannot be read as JSON" in errors[0]
    write_reader(tmp_path, 0.5)  # names tiny.keras, which this folder lacks
    status, lines, errors = run_main([zero, "--models-dir", tmp_path], capsys)
    assert status == 2 and lines == [] and len(errors) == 1
    assert f"{tmp_path / 'tiny.keras'}: no such saved model" in errors[0]


def test_the_calibration_file_beside_the_model_is_used(files, tmp_path, capsys):
    import reader

    shutil.copy(files / "sure.keras", tmp_path / "sure.keras")
    model, image = tmp_path / "sure.keras", files / "zero.png"
    calibration = {"temperature": 2.0, "score": "probability", "threshold": 0.99, "keep_on_validation": 0.99}
    (tmp_path / "sure.calibration.json").write_text(json.dumps(calibration))
    status, lines, errors = run_main([image, "--model", model, "--json"], capsys)
    assert status == 0 and errors == []
    entry = check_json_line(lines[0])
    # Temperature 2 takes the square root of each probability, renormalized: 98.1% becomes 75.7%.
    expected = reader.softmax(np.log([[SURE.get(digit, 0.003 / 7) for digit in range(10)]]), 2.0)[0]
    np.testing.assert_allclose(entry["probabilities"], expected, atol=1e-5)
    assert entry["verdict"] == "not a digit" and entry["digit"] is None and entry["threshold"] == 0.99
    assert entry["score"] == pytest.approx(expected.max(), abs=1e-5)
    status, lines, errors = run_main([image, "--model", model], capsys)
    assert (status, errors) == (0, [])
    assert lines == [f"{image}: not a digit  (looks most like 7 at 75.7%; score 0.757 below 0.99)"]
    # Without the file the same model reads uncalibrated and refuses nothing.
    (tmp_path / "sure.calibration.json").unlink()
    assert run_main([image, "--model", model], capsys)[1] == [f"{image}: 7  (7 98.1%, 1 1.2%, 9 0.4%)"]


def test_a_model_for_other_inputs_is_refused_in_one_line(files, capsys):
    import keras

    flat = keras.Sequential([keras.Input(shape=(784,)), keras.layers.Dense(10, activation="softmax")])
    flat.save(files / "flat.keras")
    status, lines, errors = run_main([files / "zero.png", "--model", files / "flat.keras"], capsys)
    assert status == 2 and lines == [] and len(errors) == 1
    assert f"{files / 'flat.keras'}: cannot read 28x28 digits with this model (" in errors[0]
    # The reader needs the logits before the softmax: a model without a Dense(10, softmax) head cannot give them.
    inputs = keras.Input(shape=(28, 28, 1))
    no_softmax = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(inputs)))
    no_softmax.save(files / "no_softmax.keras")
    status, lines, errors = run_main([files / "zero.png", "--model", files / "no_softmax.keras"], capsys)
    assert status == 2 and lines == [] and len(errors) == 1
    assert "the reader needs a model whose last layer is Dense(10, activation='softmax')" in errors[0]
    assert errors[0].endswith("Pass a model trained by model.ipynb.")


def test_ink_option_reaches_the_preparation(files, monkeypatch, capsys):
    import predict

    seen, prepare = [], predict.reader.prepare_digit_image

    def recording_prepare(image, **options):
        seen.append(options.get("ink"))
        return prepare(image, **options)

    monkeypatch.setattr(predict.reader, "prepare_digit_image", recording_prepare)
    zero = str(files / "zero.png")
    assert predict.main([zero, "--model", str(files / "tiny.keras")]) == 0
    assert predict.main([zero, "--ink", "dark", "--model", str(files / "tiny.keras")]) == 0
    assert seen == ["auto", "dark"]
    forced_wrong = predict.main([zero, "--ink", "light", "--model", str(files / "tiny.keras")])
    assert forced_wrong == 0 and seen[-1] == "light"
    with pytest.raises(SystemExit) as exit_info:
        predict.main([zero, "--ink", "black"])
    assert exit_info.value.code == 2 and "invalid choice: 'black'" in capsys.readouterr().err


# ==================== --examples: reading with the reader adapted to one person's hand ====


def write_examples(folder, files, digit=3, count=3):
    """An examples file as the pad's teach mode saves one: zero.png, prepared, taught `count` times as `digit`."""
    import reader

    zero = reader.prepare_digit_image(files / "zero.png")
    return reader.save_examples(folder / "mine.json", np.stack([zero] * count), [digit] * count)


def test_help_documents_the_examples_option(capsys):
    import predict

    with pytest.raises(SystemExit) as exit_info:
        predict.parse_arguments(["--help"])
    text = capsys.readouterr().out
    assert exit_info.value.code == 0
    assert "--examples FILE" in text and "reader.save_examples" in text and "adapted_to_examples" in text
    assert "examples file could not be loaded" in text


def test_examples_adapt_one_model_and_the_saved_reader(files, tmp_path, capsys):
    # The fixed model reads every image as 7; taught that zero.png is a 3, it reads zero.png as 3.
    examples = write_examples(tmp_path, files)
    zero = files / "zero.png"
    shutil.copy(files / "sure.keras", tmp_path / "sure.keras")
    write_reader(tmp_path, None, members=("sure",))
    for reader_options in (["--model", files / "sure.keras"], ["--models-dir", tmp_path]):
        status, lines, errors = run_main([zero, *reader_options, "--examples", examples, "--json"], capsys)
        assert (status, errors) == (0, []) and len(lines) == 1
        entry = json.loads(lines[0])
        assert entry.pop("adapted_to_examples") == 3
        entry = check_json_line(json.dumps(entry))
        assert entry["verdict"] == "digit" and entry["digit"] == 3
        # In words, the line is as without --examples: one per image, nothing else on stdout.
        status, lines, errors = run_main([zero, *reader_options, "--examples", examples], capsys)
        assert (status, errors) == (0, []) and len(lines) == 1 and lines[0].startswith(f"{zero}: 3  (3 ")
        # Without --examples nothing is adapted, and the JSON has its documented keys only.
        status, lines, errors = run_main([zero, *reader_options, "--json"], capsys)
        assert (status, errors) == (0, []) and check_json_line(lines[0])["digit"] == 7


def test_an_empty_examples_file_leaves_the_reading_as_it_was(files, tmp_path, capsys):
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"format": "handwriting examples", "version": 1, "image_size": 28, "examples": []}))
    status, lines, errors = run_main([files / "zero.png", "--model", files / "sure.keras", "--examples", empty,
                                      "--json"], capsys)
    assert (status, errors) == (0, [])
    entry = json.loads(lines[0])
    assert entry.pop("adapted_to_examples") == 0 and check_json_line(json.dumps(entry))["digit"] == 7
    assert entry["probabilities"][7] == pytest.approx(0.981, abs=1e-5)


def test_a_missing_or_broken_examples_file_stops_with_one_line(files, tmp_path, capsys):
    (tmp_path / "garbled.json").write_text("{not json")
    (tmp_path / "twelve.json").write_text(json.dumps(
        {"format": "handwriting examples", "examples": [{"digit": 12, "pixels": [0] * 784}]}))
    for name, message in (("missing.json", "no such examples file"), ("garbled.json", "cannot be read as JSON"),
                          ("twelve.json", "each example needs a digit 0-9 and 784 pixels")):
        path = tmp_path / name
        status, lines, errors = run_main([files / "zero.png", "--model", files / "sure.keras", "--examples", path],
                                         capsys)
        assert status == 2 and lines == [] and len(errors) == 1
        assert errors[0].startswith(f"predict.py: error: {path}: {message}")
    # An image that cannot be read is still reported, before the examples file stops the run.
    status, lines, errors = run_main([files / "missing.png", "--examples", tmp_path / "missing.json"], capsys)
    assert status == 2 and lines == [] and len(errors) == 2
    assert "missing.png: no such file" in errors[0] and "missing.json: no such examples file" in errors[1]


def test_a_model_that_cannot_be_adapted_is_refused_in_one_line(files, tmp_path, capsys):
    import keras

    inputs = keras.Input(shape=(28, 28, 1))
    keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(inputs))).save(tmp_path / "logits.keras")
    examples = write_examples(tmp_path, files)
    status, lines, errors = run_main([files / "zero.png", "--model", tmp_path / "logits.keras",
                                      "--examples", examples], capsys)
    assert status == 2 and lines == [] and len(errors) == 1
    assert f"{tmp_path / 'logits.keras'}: cannot read 28x28 digits with this model (" in errors[0]
    assert "the reader needs a model whose last layer is Dense(10, activation='softmax')" in errors[0]


def test_examples_with_a_committed_model(files, tmp_path, capsys):
    # A small committed model, adapted in this process: taught zero.png as a 0, it reads it as a 0.
    model = PROJECT_ROOT / "saved_models" / "cnn_basic.keras"
    if not model.is_file():
        pytest.skip(f"no {model}; run `make run` to train and save the models")
    examples = write_examples(tmp_path, files, digit=0)
    status, lines, errors = run_main([files / "zero.png", "--model", model, "--examples", examples, "--json"], capsys)
    assert (status, errors) == (0, []) and len(lines) == 1
    entry = json.loads(lines[0])
    assert entry.pop("adapted_to_examples") == 3
    entry = check_json_line(json.dumps(entry))
    assert entry["file"] == str(files / "zero.png") and entry["probabilities"][0] == max(entry["probabilities"])
