"""The command line predict.py: good images, each kind of bad input, exit codes."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageDraw

from conftest import PROJECT_ROOT


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
    (folder / "text.png").write_text("this is not an image")
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(28, 28, 1))
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(inputs)))
    model.save(folder / "tiny.keras")
    (folder / "corrupt.keras").write_bytes(np.random.default_rng(0).bytes(2048))
    return folder


def run_cli(*arguments, cwd):
    return subprocess.run([sys.executable, str(PROJECT_ROOT / "predict.py"), *map(str, arguments)],
                          capture_output=True, text=True, cwd=cwd, timeout=120)


def test_help_explains_the_command(tmp_path):
    result = run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0
    assert "--model" in result.stdout and "IMAGE" in result.stdout and "exit status" in result.stdout


def test_good_images_print_one_line_each(files):
    result = run_cli("zero.png", "other.png", "--model", "tiny.keras", cwd=files)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["zero.png", "other.png"]
    for line in lines:
        predicted = line.split(":")[1].split()[0]
        ranking = line[line.index("(") + 1:line.index(")")].split(", ")
        assert predicted.isdigit() and len(ranking) == 3 and ranking[0].startswith(predicted + " ")
    assert result.stderr.strip() == ""


def test_bad_images_are_reported_and_the_good_one_still_read(files):
    result = run_cli("missing.png", "text.png", "blank.png", "zero.png", "--model", "tiny.keras", cwd=files)
    assert result.returncode == 1
    assert result.stdout.startswith("zero.png: ")
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 3 and "Traceback" not in result.stderr
    assert "missing.png: no such file" in errors[0]
    assert "text.png: not an image" in errors[1]
    assert "blank.png: the image is blank" in errors[2]
    assert all(line.startswith("predict.py: error: ") for line in errors)


def test_unreadable_or_missing_model(files):
    corrupt = run_cli("zero.png", "--model", "corrupt.keras", cwd=files)
    assert corrupt.returncode == 2 and "Traceback" not in corrupt.stderr
    assert corrupt.stderr.strip().count("\n") == 0 and "corrupt.keras: cannot load" in corrupt.stderr
    missing = run_cli("zero.png", "--model", "nowhere.keras", cwd=files)
    assert missing.returncode == 2 and "nowhere.keras: no such model file" in missing.stderr
