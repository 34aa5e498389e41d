"""other_sources: fitting strokes to the pad, reading Chars74K and pendigits, and the non-digits made here."""

import gzip
import json
import string
from pathlib import Path

import numpy as np
import pytest

import other_sources

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CHARS74K_DIR = PROJECT_ROOT.parent / "shared" / "data" / "chars74k-dev"
PENDIGITS_DIR = PROJECT_ROOT.parent / "shared" / "data" / "pendigits"


def bounding_box(strokes):
    """(left, top, right, bottom) of every point of a drawing."""
    points = np.concatenate([np.asarray(stroke, dtype=float) for stroke in strokes])
    return (*points.min(axis=0), *points.max(axis=0))


def assert_fitted(strokes, size=280, height_fraction=0.7):
    """The drawing's box is centred on the canvas and as tall as asked, or 90% of the canvas wide."""
    left, top, right, bottom = bounding_box(strokes)
    assert (left + right) / 2 == pytest.approx(size / 2)
    assert (top + bottom) / 2 == pytest.approx(size / 2)
    height_fits = bottom - top == pytest.approx(height_fraction * size) and right - left <= 0.9 * size + 1e-9
    width_fits = right - left == pytest.approx(0.9 * size) and bottom - top <= height_fraction * size + 1e-9
    assert height_fits or width_fits


# ==================== Fitting a drawing into the pad's canvas =========================


def test_fit_strokes_to_pad_centres_the_box_at_the_asked_height():
    strokes = [[(10, 10), (10, 30)], [(12, 20), (14, 20)]]
    fitted = other_sources.fit_strokes_to_pad(strokes)
    assert [len(stroke) for stroke in fitted] == [2, 2]
    assert all(isinstance(value, float) for stroke in fitted for point in stroke for value in point)
    assert_fitted(fitted)
    assert bounding_box(fitted)[3] - bounding_box(fitted)[1] == pytest.approx(196.0)
    # A smaller canvas and share scale the same way.
    assert_fitted(other_sources.fit_strokes_to_pad(strokes, size=100, height_fraction=0.5), size=100, height_fraction=0.5)


def test_fit_strokes_to_pad_fits_a_wide_drawing_by_its_width_and_a_dot_at_the_centre():
    wide = other_sources.fit_strokes_to_pad([[(0, 0), (100, 10)]])
    left, top, right, bottom = bounding_box(wide)
    assert right - left == pytest.approx(252.0)
    assert bottom - top == pytest.approx(25.2)
    assert_fitted(wide)
    assert other_sources.fit_strokes_to_pad([[(5, 7)]]) == [[(140.0, 140.0)]]


def test_fit_strokes_to_pad_flips_tablet_coordinates():
    # On a tablet y points up, so the stroke's first point (y=0) is the lowest one.
    upright = other_sources.fit_strokes_to_pad([[(0, 0), (5, 10)]])
    flipped = other_sources.fit_strokes_to_pad([[(0, 0), (5, 10)]], flip_y=True)
    assert upright[0][0][1] < upright[0][1][1]
    assert flipped[0][0][1] > flipped[0][1][1]
    assert flipped[0][0][0] == pytest.approx(upright[0][0][0])


@pytest.mark.parametrize("strokes, words", [
    ([], "empty"),
    ([[]], "stroke 0"),
    ([[(0, 0), (1, float("nan"))]], "finite"),
    ([[(0, 0, 0)]], "stroke 0"),
])
def test_fit_strokes_to_pad_rejects_an_empty_or_broken_drawing(strokes, words):
    with pytest.raises(ValueError, match=words):
        other_sources.fit_strokes_to_pad(strokes)


# ==================== Chars74K ========================================================


def write_gzip(path, text):
    path.write_bytes(gzip.compress(text.encode("utf-8")))


def test_load_chars74k_reads_records_fitted_to_the_pad(tmp_path):
    drawings = {
        "A": [[[[0, 50], [25, 0], [50, 50]], [[10, 30], [40, 30]]], [[[3, 3], [3, 40]]]],
        "7": [[[[0, 0], [30, 0], [10, 60]]], [[[100, 100], [130, 100], [110, 170]]]],
    }
    write_gzip(tmp_path / other_sources.CHARS74K_FILE, json.dumps(drawings))
    records = other_sources.load_chars74k(tmp_path)
    assert [(record["character"], record["writer"]) for record in records] == [("A", 0), ("A", 1), ("7", 0), ("7", 1)]
    assert [len(record["strokes"]) for record in records] == [2, 1, 1, 1]
    for record in records:
        assert_fitted(record["strokes"])
    # Screen coordinates: y stays down, so the A's apex (y=0) stays at the top.
    apex_y = records[0]["strokes"][0][1][1]
    assert apex_y == pytest.approx(bounding_box(records[0]["strokes"])[1])


def test_load_chars74k_names_a_missing_or_broken_file(tmp_path):
    path = tmp_path / other_sources.CHARS74K_FILE
    with pytest.raises(FileNotFoundError, match="chars74k-dev") as missing:
        other_sources.load_chars74k(tmp_path)
    assert str(path) in str(missing.value)
    path.write_bytes(b"this is not gzip")
    with pytest.raises(ValueError, match=other_sources.CHARS74K_FILE):
        other_sources.load_chars74k(tmp_path)
    write_gzip(path, "{not json")
    with pytest.raises(ValueError, match="not JSON"):
        other_sources.load_chars74k(tmp_path)
    write_gzip(path, json.dumps([[[0, 0]]]))
    with pytest.raises(ValueError, match="JSON object"):
        other_sources.load_chars74k(tmp_path)
    write_gzip(path, json.dumps({"A": 5}))
    with pytest.raises(ValueError, match="not a list of drawings"):
        other_sources.load_chars74k(tmp_path)
    write_gzip(path, json.dumps({"A": [[[["x", 0]]]]}))
    with pytest.raises(ValueError, match="drawing 0 of 'A'"):
        other_sources.load_chars74k(tmp_path)


def test_load_chars74k_real_file_has_62_characters_by_30_writers():
    if not (CHARS74K_DIR / other_sources.CHARS74K_FILE).is_file():
        pytest.skip(f"{CHARS74K_DIR} is not here")
    records = other_sources.load_chars74k(CHARS74K_DIR)
    assert len(records) == 62 * 30
    characters = {record["character"] for record in records}
    assert characters == set(string.digits + string.ascii_uppercase + string.ascii_lowercase)
    assert {record["writer"] for record in records if record["character"] == "q"} == set(range(30))
    assert other_sources.DIGIT_SHAPED_LETTERS <= characters - set(string.digits)
    assert_fitted(records[0]["strokes"])


# ==================== UCI pendigits ===================================================


TINY_PENDIGITS = """.INCLUDE        dene.doc

.LEXICON "0" "1" "2" "3" "4" "5" "6" "7" "8" "9"
.HIERARCHY      DIGIT

.SEGMENT DIGIT    0 ? "1"
.COMMENT 1 12  3
.PEN_DOWN
 200  400
 200  300
 200  100
.PEN_UP
.DT 100

.SEGMENT DIGIT    1-2 ? "4"
.COMMENT 4  7  5
.PEN_DOWN
 100  400
 100  250
 250  250
.PEN_UP
.DT 100
.PEN_DOWN
 200  400
 200  100
.PEN_UP
.DT 100
"""


def test_load_pendigits_reads_labels_writers_and_flipped_strokes(tmp_path):
    write_gzip(tmp_path / other_sources.PENDIGITS_FILE, TINY_PENDIGITS)
    labels, writers, drawings = other_sources.load_pendigits(tmp_path)
    assert labels.tolist() == [1, 4] and writers.tolist() == [12, 7]
    assert [len(drawing) for drawing in drawings] == [1, 2]
    assert [len(stroke) for stroke in drawings[1]] == [3, 2]
    for drawing in drawings:
        assert_fitted(drawing)
    # The one is drawn from the top down (tablet y falls from 400 to 100, y up): on screen its y grows.
    one = drawings[0][0]
    assert one[0][1] < one[-1][1]


def test_load_pendigits_names_a_missing_or_broken_file(tmp_path):
    path = tmp_path / other_sources.PENDIGITS_FILE
    with pytest.raises(FileNotFoundError, match="pendigits") as missing:
        other_sources.load_pendigits(tmp_path)
    assert str(path) in str(missing.value)
    path.write_bytes(b"this is not gzip")
    with pytest.raises(ValueError, match=other_sources.PENDIGITS_FILE):
        other_sources.load_pendigits(tmp_path)
    write_gzip(path, TINY_PENDIGITS.replace(".PEN_DOWN\n 100  400", " 100  400", 1))
    with pytest.raises(ValueError, match="line 17"):
        other_sources.load_pendigits(tmp_path)
    write_gzip(path, TINY_PENDIGITS.replace('"4"', '"x"'))
    with pytest.raises(ValueError, match="not a digit"):
        other_sources.load_pendigits(tmp_path)
    write_gzip(path, ".INCLUDE dene.doc\n")
    with pytest.raises(ValueError, match="no digits"):
        other_sources.load_pendigits(tmp_path)


def test_load_pendigits_real_file_has_7494_digits_by_30_writers():
    if not (PENDIGITS_DIR / other_sources.PENDIGITS_FILE).is_file():
        pytest.skip(f"{PENDIGITS_DIR} is not here")
    labels, writers, drawings = other_sources.load_pendigits(PENDIGITS_DIR)
    assert len(labels) == len(writers) == len(drawings) == 7494
    assert set(labels.tolist()) == set(range(10))
    assert set(writers.tolist()) == set(range(1, 31))
    assert_fitted(drawings[0])


# ==================== Non-digits made here ============================================


def test_random_scribbles_stay_on_the_pad_turn_and_repeat_with_a_seed():
    scribbles = other_sources.random_scribbles(6, np.random.default_rng(3))
    assert len(scribbles) == 6
    turning = []
    for strokes in scribbles:
        assert 1 <= len(strokes) <= 4
        for stroke in strokes:
            points = np.asarray(stroke)
            assert 15 <= len(points) <= 60
            assert points.min() >= 10 and points.max() <= 270
            steps = np.diff(points, axis=0)
            headings = np.unwrap(np.arctan2(steps[:, 1], steps[:, 0]))
            turning.append(np.abs(np.diff(headings)).sum())
    # Several turns, unlike a digit's few: on average well over half a circle per stroke.
    assert np.mean(turning) > np.pi
    assert other_sources.random_scribbles(6, np.random.default_rng(3)) == scribbles
    assert other_sources.random_scribbles(6, np.random.default_rng(4)) != scribbles
    assert other_sources.random_scribbles(0, np.random.default_rng(3)) == []


def test_random_scribbles_render_with_ink():
    reader = pytest.importorskip("reader")
    scribbles = other_sources.random_scribbles(2, np.random.default_rng(0))
    for strokes in scribbles:
        image = reader.strokes_to_image(strokes)
        assert image.shape == (280, 280) and image.max() == pytest.approx(1.0)
        assert (image > 0.5).mean() > 0.01


def test_partial_strokes_keep_a_quarter_to_a_half_of_the_path():
    drawing = [[(x, 0.0) for x in range(60)], [(50.0, y) for y in range(1, 41)]]
    fragments = other_sources.partial_strokes([drawing] * 5, np.random.default_rng(1))
    assert len(fragments) == 5
    for fragment in fragments:
        assert 25 <= sum(len(stroke) for stroke in fragment) <= 45
        assert_fitted(fragment)
    assert other_sources.partial_strokes([drawing] * 5, np.random.default_rng(1)) == fragments
    tiny = other_sources.partial_strokes([[[(0, 0), (1, 1), (2, 0)]]], np.random.default_rng(1))
    assert sum(len(stroke) for stroke in tiny[0]) == 2
    with pytest.raises(ValueError, match="drawing 0"):
        other_sources.partial_strokes([[[(0, 0)]]], np.random.default_rng(1))


@pytest.mark.parametrize("make", [other_sources.blob_images, other_sources.noise_images])
def test_blob_and_noise_images_are_contrasted_floats_in_the_unit_range(make):
    images = make(6, np.random.default_rng(2), size=48)
    assert images.shape == (6, 48, 48) and images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert all(image.max() - image.min() > 0.5 for image in images)
    np.testing.assert_array_equal(make(6, np.random.default_rng(2), size=48), images)
    assert make(0, np.random.default_rng(2)).shape == (0, 112, 112)


def test_blank_paper_photos_are_bright_uneven_and_not_blank_to_the_reader():
    reader = pytest.importorskip("reader")
    photos = other_sources.blank_paper_photos(3, np.random.default_rng(5), size=80)
    assert photos.shape == (3, 80, 80) and photos.dtype == np.float32
    assert photos.min() >= 0.0 and photos.max() <= 255.0
    for photo in photos:
        assert 150 < photo.mean() < 245
        # Well over the 5% of the maximum below which prepare_digit_image calls an image blank.
        assert photo.max() - photo.min() > 0.07 * photo.max()
        field = reader.prepare_digit_image(photo)
        assert field.shape == (28, 28)
    np.testing.assert_array_equal(other_sources.blank_paper_photos(3, np.random.default_rng(5), size=80), photos)


def test_digit_pairs_put_two_different_digits_side_by_side():
    # Ten "digits" told apart by their brightness, each a bar in the middle rows.
    images = np.zeros((10, 28, 28), dtype=np.float32)
    for index in range(10):
        images[index, 8:20, 10:18] = (index + 1) / 10
    pairs = other_sources.digit_pairs(images, np.random.default_rng(6), 8)
    assert pairs.shape == (8, 28, 56) and pairs.dtype == np.float32
    assert pairs.min() >= 0.0 and pairs.max() <= 1.0
    for pair in pairs:
        assert pair[:, :28].max() != pair[:, 28:].max()
        left_rows = np.flatnonzero(pair[:, :28].max(axis=1))
        right_rows = np.flatnonzero(pair[:, 28:].max(axis=1))
        assert abs(left_rows[0] - right_rows[0]) <= 3 and len(right_rows) == 12
    np.testing.assert_array_equal(other_sources.digit_pairs(images, np.random.default_rng(6), 8), pairs)
    with pytest.raises(ValueError, match="255"):
        other_sources.digit_pairs(images * 255, np.random.default_rng(6), 2)
    with pytest.raises(ValueError, match="at least 2"):
        other_sources.digit_pairs(images[:1], np.random.default_rng(6), 2)


def test_generators_refuse_a_bad_count_or_rng():
    with pytest.raises(ValueError, match="count"):
        other_sources.noise_images(-1, np.random.default_rng(0))
    with pytest.raises(TypeError, match="default_rng"):
        other_sources.random_scribbles(2, 0)


def test_digit_shaped_letters_are_letters():
    assert other_sources.DIGIT_SHAPED_LETTERS == frozenset("ODQIlZzSsbGgqo")
    assert all(letter.isalpha() for letter in other_sources.DIGIT_SHAPED_LETTERS)
