"""reader.prepare_digit_image, ink_polarity and predict_digits on images the tests draw themselves (and real MNIST)."""

import os

import numpy as np
import pytest
from PIL import Image, ImageDraw

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import helpers  # noqa: E402
import reader  # noqa: E402


def draw_digit(size=(200, 200), shape="zero", dark_on_light=True, box=None):
    """A digit drawn with Pillow inside `box`: 'zero' an ellipse, 'one' a vertical bar, 'seven' two strokes."""
    background, ink = (255, 0) if dark_on_light else (0, 255)
    image = Image.new("L", size, background)
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = box or (size[0] // 4, size[1] // 8, 3 * size[0] // 4, 7 * size[1] // 8)
    stroke = max(2, min(size) // 14)
    if shape == "zero":
        draw.ellipse((left, top, right, bottom), outline=ink, width=stroke)
    elif shape == "one":
        middle = (left + right) // 2
        draw.line([(middle, top), (middle, bottom)], fill=ink, width=stroke)
    else:
        draw.line([(left, top), (right, top)], fill=ink, width=stroke)
        draw.line([(right, top), ((left + right) // 2, bottom)], fill=ink, width=stroke)
    return image


def ink_box(field, threshold=0.05):
    """Height and width of the box around the pixels brighter than `threshold`."""
    rows = np.flatnonzero(field.max(axis=1) > threshold)
    columns = np.flatnonzero(field.max(axis=0) > threshold)
    return rows[-1] - rows[0] + 1, columns[-1] - columns[0] + 1


def centre_of_mass(field):
    rows, columns = np.indices(field.shape)
    return (rows * field).sum() / field.sum(), (columns * field).sum() / field.sum()


def test_output_shape_type_and_range():
    field = reader.prepare_digit_image(draw_digit())
    assert field.shape == (28, 28) and field.dtype == np.float32
    assert field.min() == 0.0 and field.max() == pytest.approx(1.0)


def test_dark_on_light_is_inverted_to_light_on_dark():
    dark_on_light = reader.prepare_digit_image(draw_digit(dark_on_light=True))
    light_on_dark = reader.prepare_digit_image(draw_digit(dark_on_light=False))
    # The background ends up black and the ink white, as in MNIST, whichever way it was drawn.
    assert dark_on_light[0, 0] == 0.0 and light_on_dark[0, 0] == 0.0
    assert dark_on_light[14, 14] == 0.0 and dark_on_light.max() == pytest.approx(1.0)
    assert np.abs(dark_on_light - light_on_dark).mean() < 0.02


def test_small_digit_in_a_corner_is_cropped_scaled_and_centred():
    image = draw_digit(size=(400, 300), box=(10, 10, 60, 80))
    field = reader.prepare_digit_image(image)
    height, width = ink_box(field)
    assert max(height, width) in (19, 20, 21) and width < height
    row, column = centre_of_mass(field)
    assert abs(row - 14) <= 1.0 and abs(column - 14) <= 1.0


@pytest.mark.parametrize("shape", ["zero", "one", "seven"])
def test_centre_of_mass_is_at_the_centre(shape):
    # The "7" has most of its ink at the top: centring its box instead would leave its mass ~3 px high.
    field = reader.prepare_digit_image(draw_digit(shape=shape, box=(30, 20, 170, 190)))
    row, column = centre_of_mass(field)
    assert 13.0 <= row <= 15.0 and 13.0 <= column <= 15.0


def test_aspect_ratio_is_kept():
    field = reader.prepare_digit_image(draw_digit(shape="one"))
    height, width = ink_box(field)
    assert height in (19, 20, 21) and width <= 6


def test_path_pil_and_array_give_the_same_result(tmp_path):
    image = draw_digit()
    path = tmp_path / "digit.png"
    image.save(path)
    from_pil = reader.prepare_digit_image(image)
    np.testing.assert_allclose(reader.prepare_digit_image(path), from_pil)
    np.testing.assert_allclose(reader.prepare_digit_image(str(path)), from_pil)
    np.testing.assert_allclose(reader.prepare_digit_image(np.asarray(image)), from_pil, atol=1e-6)
    np.testing.assert_allclose(reader.prepare_digit_image(np.asarray(image)[..., np.newaxis]), from_pil, atol=1e-6)
    np.testing.assert_allclose(reader.prepare_digit_image(np.stack([np.asarray(image)] * 3, axis=-1)),
                               from_pil, atol=1e-3)
    np.testing.assert_allclose(reader.prepare_digit_image(image.convert("RGB")), from_pil)


def test_transparent_drawings_are_put_on_white():
    # A drawing app's export: black strokes on fully transparent (and black) pixels.
    rgba = Image.new("RGBA", (100, 100), (0, 0, 0, 0))
    ImageDraw.Draw(rgba).ellipse((25, 10, 75, 90), outline=(0, 0, 0, 255), width=8)
    reference = reader.prepare_digit_image(draw_digit(size=(100, 100), box=(25, 10, 75, 90)))
    assert np.abs(reader.prepare_digit_image(rgba) - reference).mean() < 0.05
    assert np.abs(reader.prepare_digit_image(np.asarray(rgba)) - reference).mean() < 0.05


def test_sixteen_bit_scan_is_scaled_not_clipped(tmp_path):
    eight_bit = draw_digit()
    path = tmp_path / "scan16.png"
    # Grey ink (5000) on grey paper (56000): above 255 both, so clipping to 8 bits would leave a blank page.
    Image.fromarray(np.asarray(eight_bit).astype(np.uint16) * 200 + 5000).save(path)
    np.testing.assert_allclose(reader.prepare_digit_image(path), reader.prepare_digit_image(eight_bit), atol=1e-3)


def test_photo_is_turned_upright_by_its_exif_orientation(tmp_path):
    # Orientation 6: the camera was held sideways, so the bar stored upright is shown lying down.
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "photo.jpg"
    draw_digit(shape="one").save(path, exif=exif)
    height, width = ink_box(reader.prepare_digit_image(path))
    assert width in (19, 20, 21) and height <= 6


def test_scikit_learn_sized_digit_works():
    digit = np.zeros((8, 8))
    digit[1:7, 3:5] = 16  # a thick "1" in the 0-16 range of scikit-learn's digits
    field = reader.prepare_digit_image(digit)
    height, width = ink_box(field)
    assert field.dtype == np.float32 and field.max() == pytest.approx(1.0)
    assert height in (19, 20, 21) and width < height


def test_mnist_digits_come_back_unchanged(mnist_dir):
    _, (test_images, _) = helpers.load_mnist(mnist_dir)
    originals = test_images[:100].astype(np.float32) / 255
    prepared = np.stack([reader.prepare_digit_image(image) for image in test_images[:100]])
    # MNIST was made this way already, so preparing it again must change almost nothing
    # (measured: 99 of these 100 digits differ by under 0.002 per pixel on average).
    differences = np.abs(prepared - originals).mean(axis=(1, 2))
    assert (differences < 0.01).sum() >= 95
    shifts = [np.hypot(*np.subtract(centre_of_mass(a), centre_of_mass(b))) for a, b in zip(prepared, originals)]
    assert np.median(shifts) < 0.1


@pytest.mark.parametrize("blank", [np.zeros((30, 30)), np.full((30, 30), 255.0), Image.new("L", (40, 40), 200)])
def test_blank_image_is_refused(blank):
    with pytest.raises(ValueError, match="blank"):
        reader.prepare_digit_image(blank)


def test_faint_noise_without_ink_is_refused():
    # An empty grey page with a little sensor noise: the contrast stretch alone would call it ink.
    page = np.full((50, 50), 200.0)
    page[0, 0], page[25, 25] = 201.0, 199.0
    with pytest.raises(ValueError, match="blank"):
        reader.prepare_digit_image(page)


def test_bad_files_have_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.png: no such file"):
        reader.prepare_digit_image(tmp_path / "missing.png")
    text_file = tmp_path / "notes.png"
    text_file.write_text("not an image")
    with pytest.raises(ValueError, match="notes.png: not an image Pillow can read"):
        reader.prepare_digit_image(text_file)
    with pytest.raises(IsADirectoryError, match="is a folder"):
        reader.prepare_digit_image(tmp_path)


def test_bad_arrays_have_clear_errors():
    with pytest.raises(ValueError, match="empty"):
        reader.prepare_digit_image(np.zeros((0, 5)))
    with pytest.raises(ValueError, match=r"shape \(2, 3, 4, 5\)"):
        reader.prepare_digit_image(np.zeros((2, 3, 4, 5)))
    with pytest.raises(ValueError, match=r"shape \(10, 10, 2\)"):
        reader.prepare_digit_image(np.zeros((10, 10, 2)))
    with pytest.raises(ValueError, match="NaN"):
        reader.prepare_digit_image(np.full((10, 10), np.nan))


@pytest.fixture(scope="module")
def tiny_model():
    """An untrained Flatten -> Dense(10, softmax) model: enough to check shapes and probabilities."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(28, 28, 1))
    outputs = keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(inputs))
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("shape, count", [((28, 28), 1), ((3, 28, 28), 3), ((4, 28, 28, 1), 4)])
def test_predict_digits_shapes(tiny_model, shape, count):
    labels, probabilities = reader.predict_digits(tiny_model, np.random.default_rng(0).random(shape))
    assert labels.shape == (count,) and np.issubdtype(labels.dtype, np.integer)
    assert probabilities.shape == (count, 10) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(labels, probabilities.argmax(axis=1))


def test_predict_digits_takes_a_list_of_prepared_images(tiny_model):
    prepared = [reader.prepare_digit_image(draw_digit(shape=shape)) for shape in ("zero", "one")]
    labels, probabilities = reader.predict_digits(tiny_model, prepared)
    assert labels.shape == (2,) and probabilities.shape == (2, 10)
    # Each image is classified on its own: the batch gives what one-at-a-time calls give.
    for image, row in zip(prepared, probabilities):
        np.testing.assert_allclose(reader.predict_digits(tiny_model, image)[1][0], row, atol=1e-6)


def test_predict_digits_refuses_bad_input(tiny_model):
    with pytest.raises(ValueError, match=r"shape \(5, 32, 32\)"):
        reader.predict_digits(tiny_model, np.zeros((5, 32, 32)))
    with pytest.raises(ValueError, match=r"shape \(0,\)"):
        reader.predict_digits(tiny_model, [])
    with pytest.raises(ValueError, match=r"\(20, 20\), \(28, 28\)"):
        reader.predict_digits(tiny_model, [np.zeros((28, 28)), np.zeros((20, 20))])
    with pytest.raises(ValueError, match="Divide 0-255 pixels by 255"):
        reader.predict_digits(tiny_model, np.full((2, 28, 28), 255, dtype=np.uint8))


def draw_heavy_digit(shape, dark_on_light, size=200, pen=40, cut=18):
    """A heavy 'zero' (a rounded box) or 'eight' (two rings), drawn bigger than the frame and cropped
    into its ink by `cut` pixels on each side, as a careless tight crop of a marker drawing is."""
    background, ink = (255, 0) if dark_on_light else (0, 255)
    full = size + 2 * cut
    image = Image.new("L", (full, full), background)
    draw = ImageDraw.Draw(image)
    if shape == "zero":
        draw.rounded_rectangle((0, 0, full - 1, full - 1), radius=full // 3, outline=ink, width=pen)
    else:
        draw.ellipse((full * 0.1, 0, full * 0.9, full * 0.52), outline=ink, width=pen)
        draw.ellipse((0, full * 0.45, full - 1, full - 1), outline=ink, width=pen)
    return image.crop((cut, cut, cut + size, cut + size))


@pytest.mark.parametrize("shape", ["zero", "eight"])
@pytest.mark.parametrize("dark_on_light", [True, False])
def test_tight_crop_of_a_heavy_digit_keeps_its_ink(shape, dark_on_light):
    image = draw_heavy_digit(shape, dark_on_light)
    pixels = np.asarray(image, dtype=np.float32) / 255
    frame = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    ink_value = 0.0 if dark_on_light else 1.0
    # The hard case: most of the frame is ink, so "the frame's colour is the paper" would invert it.
    assert np.mean(frame == ink_value) > 0.5
    expected = "dark" if dark_on_light else "light"
    assert reader.ink_polarity(pixels) == expected
    field = reader.prepare_digit_image(image)
    np.testing.assert_allclose(field, reader.prepare_digit_image(image, ink=expected))
    # The digit is the ink, not its hole: the centre of a 0 stays dark and the ink is a thin share.
    if shape == "zero":
        assert field[12:16, 12:16].max() < 0.1
    assert 0.15 < (field > 0.5).mean() < 0.45


def test_the_same_heavy_digit_reads_the_same_either_way_round():
    light = reader.prepare_digit_image(draw_heavy_digit("zero", dark_on_light=False))
    dark = reader.prepare_digit_image(draw_heavy_digit("zero", dark_on_light=True))
    assert np.abs(light - dark).mean() < 0.02


def test_forcing_the_ink_overrides_the_guess():
    image = draw_digit(dark_on_light=True)
    auto = reader.prepare_digit_image(image)
    np.testing.assert_allclose(reader.prepare_digit_image(image, ink="dark"), auto)
    # Forced the wrong way round, the paper is taken for ink and the prepared image is another one.
    assert np.abs(reader.prepare_digit_image(image, ink="light") - auto).mean() > 0.1
    with pytest.raises(ValueError, match=r"ink='black'; use 'dark'"):
        reader.prepare_digit_image(image, ink="black")


def test_ink_polarity_of_pages_with_paper_all_around():
    for dark_on_light in (True, False):
        expected = "dark" if dark_on_light else "light"
        for shape in ("zero", "one", "seven"):
            assert reader.ink_polarity(np.asarray(draw_digit(shape=shape, dark_on_light=dark_on_light))) == expected
    with pytest.raises(ValueError, match="some contrast"):
        reader.ink_polarity(np.zeros((5, 5)))


def test_ink_polarity_of_mnist_digits_both_ways_and_cropped_tightly(mnist_dir):
    _, (test_images, _) = helpers.load_mnist(mnist_dir)
    images = test_images[:500].astype(np.float32)
    assert all(reader.ink_polarity(image) == "light" for image in images)
    assert all(reader.ink_polarity(255 - image) == "dark" for image in images)

    def tight(image):
        rows, columns = np.flatnonzero(image.max(axis=1) > 25), np.flatnonzero(image.max(axis=0) > 25)
        return image[rows[0]:rows[-1] + 1, columns[0]:columns[-1] + 1]

    # Cropped to the ink, a thin digit leaves little paper to go by (measured: 32 of 20,000 wrong on the full set).
    wrong = sum(reader.ink_polarity(tight(image)) != "light" for image in images)
    wrong += sum(reader.ink_polarity(255 - tight(image)) != "dark" for image in images)
    assert wrong <= 5
