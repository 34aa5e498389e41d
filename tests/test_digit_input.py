"""prepare_digit_image and predict_digits on images the tests draw themselves."""

import numpy as np
import pytest
from PIL import Image, ImageDraw

import helpers


def draw_digit(size=(200, 200), shape="zero", dark_on_light=True, box=None):
    """A digit drawn with Pillow: 'zero' an ellipse, 'one' a vertical bar, inside `box`."""
    background, ink = (255, 0) if dark_on_light else (0, 255)
    image = Image.new("L", size, background)
    draw = ImageDraw.Draw(image)
    box = box or (size[0] // 4, size[1] // 8, 3 * size[0] // 4, 7 * size[1] // 8)
    if shape == "zero":
        draw.ellipse(box, outline=ink, width=max(2, size[0] // 14))
    else:
        middle = (box[0] + box[2]) // 2
        draw.line([(middle, box[1]), (middle, box[3])], fill=ink, width=max(2, size[0] // 14))
    return image


def ink_box(field, threshold=0.05):
    rows = np.flatnonzero(field.max(axis=1) > threshold)
    columns = np.flatnonzero(field.max(axis=0) > threshold)
    return rows[-1] - rows[0] + 1, columns[-1] - columns[0] + 1


def centre_of_mass(field):
    rows, columns = np.indices(field.shape)
    return (rows * field).sum() / field.sum(), (columns * field).sum() / field.sum()


def test_output_shape_type_and_range():
    field = helpers.prepare_digit_image(draw_digit())
    assert field.shape == (28, 28) and field.dtype == np.float32
    assert field.min() == 0.0 and field.max() == pytest.approx(1.0)


def test_dark_on_light_is_inverted_to_light_on_dark():
    dark_on_light = helpers.prepare_digit_image(draw_digit(dark_on_light=True))
    light_on_dark = helpers.prepare_digit_image(draw_digit(dark_on_light=False))
    assert dark_on_light[0, 0] == 0.0 and light_on_dark[0, 0] == 0.0  # the background is black, as in MNIST
    assert np.abs(dark_on_light - light_on_dark).mean() < 0.02


def test_small_digit_in_a_corner_is_cropped_scaled_and_centred():
    image = draw_digit(size=(400, 300), box=(10, 10, 60, 80))
    field = helpers.prepare_digit_image(image)
    height, width = ink_box(field)
    assert max(height, width) in (19, 20, 21)
    row, column = centre_of_mass(field)
    assert abs(row - 14) <= 1.0 and abs(column - 14) <= 1.0


def test_aspect_ratio_is_kept():
    field = helpers.prepare_digit_image(draw_digit(shape="one"))
    height, width = ink_box(field)
    assert height in (19, 20, 21) and width <= 6


def test_path_pil_and_array_give_the_same_result(tmp_path):
    image = draw_digit()
    path = tmp_path / "digit.png"
    image.save(path)
    from_path = helpers.prepare_digit_image(path)
    from_pil = helpers.prepare_digit_image(image)
    from_array = helpers.prepare_digit_image(np.asarray(image))
    from_rgb = helpers.prepare_digit_image(np.stack([np.asarray(image)] * 3, axis=-1))
    np.testing.assert_allclose(from_path, from_pil)
    np.testing.assert_allclose(from_array, from_pil, atol=1e-6)
    np.testing.assert_allclose(from_rgb, from_pil, atol=1e-3)
    np.testing.assert_allclose(helpers.prepare_digit_image(str(path)), from_pil)


def test_transparent_png_is_drawn_on_white(tmp_path):
    rgba = Image.new("RGBA", (100, 100), (0, 0, 0, 0))
    ImageDraw.Draw(rgba).ellipse((25, 10, 75, 90), outline=(0, 0, 0, 255), width=8)
    field = helpers.prepare_digit_image(rgba)
    reference = helpers.prepare_digit_image(draw_digit(size=(100, 100), box=(25, 10, 75, 90)))
    assert np.abs(field - reference).mean() < 0.05


def test_scikit_learn_sized_digit_works():
    digit = np.zeros((8, 8))
    digit[1:7, 3:5] = 16  # a thick "1" in the 0-16 range of scikit-learn's digits
    field = helpers.prepare_digit_image(digit)
    height, width = ink_box(field)
    assert height in (19, 20, 21) and width < height


def test_mnist_digits_stay_close_to_themselves(mnist_dir):
    _, (test_images, _) = helpers.load_mnist(mnist_dir)
    originals = test_images[:100].astype(np.float32) / 255
    prepared = np.stack([helpers.prepare_digit_image(image) for image in test_images[:100]])
    # MNIST was made this way already: the same digits come back, roughly where they were.
    differences = np.abs(prepared - originals).mean(axis=(1, 2))
    assert np.median(differences) < 0.08
    shifts = [np.hypot(*np.subtract(centre_of_mass(a), centre_of_mass(b))) for a, b in zip(prepared, originals)]
    assert np.median(shifts) < 0.75


@pytest.mark.parametrize("blank", [np.zeros((30, 30)), np.full((30, 30), 255.0), Image.new("L", (40, 40), 200)])
def test_blank_image_is_refused(blank):
    with pytest.raises(ValueError, match="blank"):
        helpers.prepare_digit_image(blank)


def test_faint_noise_without_ink_is_refused():
    # An empty grey page with a little sensor noise: the contrast stretch alone would call it ink.
    page = np.full((50, 50), 200.0)
    page[0, 0], page[25, 25] = 201.0, 199.0
    with pytest.raises(ValueError, match="blank"):
        helpers.prepare_digit_image(page)


def test_bad_inputs_have_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        helpers.prepare_digit_image(tmp_path / "missing.png")
    text_file = tmp_path / "notes.png"
    text_file.write_text("not an image")
    with pytest.raises(ValueError, match="notes.png: not an image"):
        helpers.prepare_digit_image(text_file)
    with pytest.raises(ValueError, match="empty"):
        helpers.prepare_digit_image(np.zeros((0, 5)))
    with pytest.raises(ValueError, match=r"shape \(2, 3, 4, 5\)"):
        helpers.prepare_digit_image(np.zeros((2, 3, 4, 5)))


@pytest.fixture(scope="module")
def tiny_model():
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(28, 28, 1))
    outputs = keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(inputs))
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("shape, count", [((28, 28), 1), ((3, 28, 28), 3), ((4, 28, 28, 1), 4)])
def test_predict_digits_shapes(tiny_model, shape, count):
    labels, probabilities = helpers.predict_digits(tiny_model, np.random.default_rng(0).random(shape))
    assert labels.shape == (count,) and probabilities.shape == (count, 10)
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(labels, probabilities.argmax(axis=1))


def test_predict_digits_takes_a_list_and_refuses_bad_shapes(tiny_model):
    labels, _ = helpers.predict_digits(tiny_model, [np.zeros((28, 28)), np.ones((28, 28))])
    assert labels.shape == (2,)
    with pytest.raises(ValueError, match=r"shape \(5, 32, 32\)"):
        helpers.predict_digits(tiny_model, np.zeros((5, 32, 32)))
