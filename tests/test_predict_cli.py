"""The command line predict.py: good images, each kind of bad input, exit codes, the default model.

Each run of predict.py that loads a model imports TensorFlow (5-10 s), so the cases share runs.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

PROJECT_ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Keras' own model.save trips over NumPy 2's copy keyword; that is Keras' business, not this test's.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Two drawn digits, a blank image, a text file named .png, a tiny model and a corrupt one."""
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
    (folder / "corrupt.keras").write_bytes(np.random.default_rng(0).bytes(2048))
    return folder


def run_cli(*arguments, cwd):
    return subprocess.run([sys.executable, str(PROJECT_ROOT / "predict.py"), *map(str, arguments)],
                          capture_output=True, text=True, cwd=cwd, timeout=300)


def test_help_explains_the_command(tmp_path):
    result = run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0
    assert "--model" in result.stdout and "IMAGE" in result.stdout and "example" in result.stdout
    assert "exit status" in result.stdout
    assert "--ink {auto,dark,light}" in result.stdout and "dark ink on light paper" in result.stdout


def test_good_images_print_one_line_each(files):
    result = run_cli("zero.png", "other.png", "--model", "tiny.keras", cwd=files)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["zero.png", "other.png"]
    for line in lines:
        predicted = line.split(":")[1].split()[0]
        ranking = line[line.index("(") + 1:line.index(")")].split(", ")
        percentages = [float(entry.split()[1].rstrip("%")) for entry in ranking]
        assert predicted.isdigit() and len(ranking) == 3 and ranking[0].startswith(predicted + " ")
        assert percentages == sorted(percentages, reverse=True) and 0 < sum(percentages) <= 100.1
    assert result.stderr.strip() == ""  # TensorFlow's start-up chatter stays hidden


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
    assert corrupt.stderr.startswith("predict.py: error: corrupt.keras: cannot load")
    missing = run_cli("zero.png", "--model", "nowhere.keras", cwd=files)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert missing.stderr.strip() == "predict.py: error: nowhere.keras: no such model file. " \
                                     "Train the models with `make run`, or pass --model PATH."


def test_a_model_for_other_inputs_is_refused_in_one_line(files, capsys):
    import keras

    import predict

    flat = keras.Sequential([keras.Input(shape=(784,)), keras.layers.Dense(10, activation="softmax")])
    flat.save(files / "flat.keras")
    assert predict.main([str(files / "zero.png"), "--model", str(files / "flat.keras")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert "flat.keras: cannot classify 28x28 digits with this model (its input shape is (None, 784)" in captured.err


def test_default_model_is_the_most_accurate_saved_one(tmp_path, monkeypatch):
    import predict

    monkeypatch.setattr(predict, "PROJECT_ROOT", tmp_path)
    assert predict.default_model_path() == tmp_path / "saved_models" / "cnn_optimized.keras"  # no metrics yet
    (tmp_path / "figures").mkdir()
    (tmp_path / "saved_models").mkdir()
    models = {
        "dnn": {"test_accuracy": 0.98},
        "cnn_basic": {"test_accuracy": 0.991},
        "resnet": {"test_accuracy": 0.995},  # the best, but its file is missing
        "ensemble": {"test_accuracy": 0.997, "members": ["dnn", "cnn_basic"]},  # no file of its own
    }
    (tmp_path / "figures" / "metrics.json").write_text(json.dumps({"models": models}))
    for name in ("dnn", "cnn_basic", "ensemble"):
        (tmp_path / "saved_models" / f"{name}.keras").write_bytes(b"")
    assert predict.default_model_path() == tmp_path / "saved_models" / "cnn_basic.keras"


def test_ink_option_reaches_the_preparation(files, monkeypatch, capsys):
    import helpers
    import predict

    seen, prepare = [], helpers.prepare_digit_image

    def recording_prepare(image, **options):
        seen.append(options.get("ink"))
        return prepare(image, **options)

    monkeypatch.setattr(predict.helpers, "prepare_digit_image", recording_prepare)
    zero = str(files / "zero.png")
    assert predict.main([zero, "--model", str(files / "tiny.keras")]) == 0
    assert predict.main([zero, "--ink", "dark", "--model", str(files / "tiny.keras")]) == 0
    assert seen == ["auto", "dark"]
    forced_wrong = predict.main([zero, "--ink", "light", "--model", str(files / "tiny.keras")])
    assert forced_wrong == 0 and seen[-1] == "light"
    with pytest.raises(SystemExit) as exit_info:
        predict.main([zero, "--ink", "black"])
    assert exit_info.value.code == 2 and "invalid choice: 'black'" in capsys.readouterr().err
