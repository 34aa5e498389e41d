"""Digits and non-digits from elsewhere: pen strokes of Chars74K letters and of UCI pendigits,
and non-digits made here, for measuring whether the reader knows when it cannot read.

Sections: fitting a drawing into the pad's canvas; Chars74K letters and digits; UCI pendigits;
non-digits made here as strokes (scribbles, fragments of digits); non-digits made here as images
(blobs, noise, photos of blank paper, two digits side by side).
Drawings follow the drawing pad's convention: a list of strokes, a stroke a list of (x, y)
points in pixels from the top-left corner of a PAD_SIZE x PAD_SIZE canvas, y pointing down.
Everything random draws from a numpy Generator passed in, so a seed gives the same data.
Strokes are checked as the reader checks the pad's strokes (`reader.stroke_arrays`).
"""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path

import numpy as np
from scipy import ndimage

import reader
from reader import PAD_SIZE

CHARS74K_FILE = "chars74k-writers-0-29.json.gz"
CHARS74K_HINT = "point it at ../shared/data/chars74k-dev"
PENDIGITS_FILE = "pendigits-orig.tra.gz"
PENDIGITS_HINT = "point it at ../shared/data/pendigits"

# Letters commonly written like a digit (O/o/D/Q as 0, I/l as 1, Z/z as 2, S/s as 5, b and G as 6,
# g/q as 9): a reader may fairly answer a digit for them, so they are measured apart from the other letters.
DIGIT_SHAPED_LETTERS = frozenset("ODQIlZzSsbGgqo")


# ==================== Fitting a drawing into the pad's canvas =========================


def fit_strokes_to_pad(strokes, size: int = PAD_SIZE, height_fraction: float = 0.7,
                       flip_y: bool = False) -> list[list[tuple[float, float]]]:
    """Scale and centre a drawing (strokes in any coordinates) into a (size x size) pad canvas.

    The drawing is scaled uniformly so that its height is `height_fraction * size`, or less
    where its width would then exceed `0.9 * size` (then the width is `0.9 * size`), and its
    bounding box is centred on the canvas. `flip_y=True` is for tablet coordinates whose
    y axis points up. A drawing with no extent (one point) is placed at the centre.
    Returns a list of strokes, each a list of (x, y) float tuples. Raises ValueError for an
    empty drawing, an empty stroke, or points that are not finite (x, y) numbers.
    """
    if not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size={size!r}; use the canvas width in pixels, a positive whole number such as {PAD_SIZE}.")
    if not 0.0 < height_fraction <= 1.0:
        raise ValueError(f"height_fraction={height_fraction!r}; use a share of the canvas between 0 and 1, such as 0.7.")
    arrays = [points * [1.0, -1.0] if flip_y else points for points in reader.stroke_arrays(strokes)]
    if not arrays:
        raise ValueError("the drawing is empty (no strokes); pass at least one stroke of (x, y) points.")

    every_point = np.concatenate(arrays)
    low, high = every_point.min(axis=0), every_point.max(axis=0)
    width, height = high - low
    # A wide drawing (or a flat line) is fitted by its width, so that it stays on the canvas.
    if height > 0 and width * height_fraction / height <= 0.9:
        scale = height_fraction * size / height
    elif width > 0:
        scale = 0.9 * size / width
    else:
        scale = 1.0  # a dot has no size to scale; it only moves to the centre
    offset = size / 2 - scale * (low + high) / 2
    return [[(float(x), float(y)) for x, y in points * scale + offset] for points in arrays]


# ==================== Chars74K: letters and digits by 30 writers ======================


def _read_gzip_text(path: Path, hint: str) -> str:
    """The text of a gzip file, with the errors a missing or corrupt file gives named and explained."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; {hint}.")
    try:
        return gzip.decompress(path.read_bytes()).decode("utf-8")
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not a readable gzip text file ({error}); copy it again and "
                         f"{hint}.") from error


def load_chars74k(folder) -> list[dict]:
    """Read the Chars74K pen drawings in `folder`: one record per drawing, in the file's order.

    Each record is {"character": "A", "writer": 0, "strokes": [...]}: drawing i of every
    character is by writer i, and the strokes are already fitted into the pad's canvas (y down).
    Raises FileNotFoundError when the file is missing and ValueError when it is not gzip
    JSON mapping characters to lists of drawings.
    """
    path = Path(folder) / CHARS74K_FILE
    text = _read_gzip_text(path, CHARS74K_HINT)
    try:
        characters = json.loads(text)
    except ValueError as error:
        raise ValueError(f"{path} is not JSON ({error}); copy it again and {CHARS74K_HINT}.") from error
    if not isinstance(characters, dict) or not characters:
        raise ValueError(f"{path} must hold a JSON object mapping characters to lists of drawings; "
                         f"{CHARS74K_HINT}.")
    records = []
    for character, drawings in characters.items():
        if not isinstance(drawings, list) or not drawings:
            raise ValueError(f"{path}: character {character!r} maps to {json.dumps(drawings)[:40]}, "
                             f"not a list of drawings; {CHARS74K_HINT}.")
        for writer, drawing in enumerate(drawings):
            if not isinstance(drawing, list) or not drawing:
                raise ValueError(f"{path}: drawing {writer} of {character!r} is not a list of strokes; "
                                 f"{CHARS74K_HINT}.")
            try:
                strokes = fit_strokes_to_pad(drawing)
            except ValueError as error:
                raise ValueError(f"{path}: drawing {writer} of {character!r}: {error}") from error
            records.append({"character": character, "writer": writer, "strokes": strokes})
    return records


# ==================== UCI pendigits: digits by 30 other writers =======================


def load_pendigits(folder):
    """Read the UCI pendigits pen trajectories in `folder`: (labels, writers, drawings).

    `labels` and `writers` are int arrays (digits 0-9, writers 1-30) and `drawings` a list of
    stroke lists fitted into the pad's canvas, with the tablet's upward y axis flipped to the
    screen's. The file is UNIPEN-like text: `.SEGMENT DIGIT ... "<label>"` starts a digit,
    `.COMMENT <label> <writer> <n>` names its writer, `.PEN_DOWN` ... `.PEN_UP` enclose one
    stroke of `x y` lines; other dot lines are ignored. Raises FileNotFoundError when the file is
    missing and ValueError, naming the file and line, when it does not parse.
    """
    path = Path(folder) / PENDIGITS_FILE
    text = _read_gzip_text(path, PENDIGITS_HINT)
    labels, writers, raw_drawings = [], [], []
    stroke = None  # the stroke being read, between .PEN_DOWN and .PEN_UP

    def problem(line_number, message):
        return ValueError(f"{path}, line {line_number}: {message}; copy the file again and {PENDIGITS_HINT}.")

    for line_number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        keyword = fields[0]
        if keyword == ".SEGMENT":
            if stroke is not None:
                raise problem(line_number, "a new digit starts inside a stroke (a .PEN_UP is missing)")
            label = fields[-1].strip('"')
            if not (label.isdigit() and len(label) == 1):
                raise problem(line_number, f"the digit's label {fields[-1]} is not a digit 0-9")
            labels.append(int(label))
            writers.append(None)
            raw_drawings.append([])
        elif keyword == ".COMMENT" and raw_drawings:
            if len(fields) < 3 or not fields[2].isdigit():
                raise problem(line_number, "a .COMMENT line must read '.COMMENT <label> <writer> <n>'")
            writers[-1] = int(fields[2])
        elif keyword == ".PEN_DOWN":
            if not raw_drawings or stroke is not None:
                raise problem(line_number, ".PEN_DOWN outside a digit or inside another stroke")
            stroke = []
        elif keyword == ".PEN_UP":
            if stroke is None:
                raise problem(line_number, ".PEN_UP without a .PEN_DOWN")
            if stroke:
                raw_drawings[-1].append(stroke)
            stroke = None
        elif keyword.startswith("."):
            continue  # .DT timing, the header and comments before the first digit
        else:
            if stroke is None or len(fields) != 2:
                raise problem(line_number, f"expected an 'x y' point inside a stroke, found {line.strip()!r}")
            try:
                stroke.append((float(fields[0]), float(fields[1])))
            except ValueError as error:
                raise problem(line_number, f"{line.strip()!r} is not an 'x y' point") from error

    if stroke is not None:
        raise problem(line_number, "the file ends inside a stroke (a .PEN_UP is missing)")
    if not raw_drawings:
        raise ValueError(f"{path} holds no digits (no .SEGMENT lines); {PENDIGITS_HINT}.")
    drawings = []
    for index, (label, writer, drawing) in enumerate(zip(labels, writers, raw_drawings)):
        if writer is None or not drawing:
            raise ValueError(f"{path}: digit {index} (a {label}) has no writer or no strokes; "
                             f"copy the file again and {PENDIGITS_HINT}.")
        drawings.append(fit_strokes_to_pad(drawing, flip_y=True))
    return np.array(labels, dtype=np.int64), np.array(writers, dtype=np.int64), drawings


# ==================== Non-digits made here: strokes ===================================


def _check_count_and_rng(count, rng) -> None:
    """Raise for a count that is not a whole number >= 0 or an rng that is not a numpy Generator."""
    if count is not None and (not isinstance(count, (int, np.integer)) or count < 0):
        raise ValueError(f"count={count!r}; use how many to make, a whole number >= 0.")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng is a {type(rng).__name__}; pass a numpy Generator such as np.random.default_rng(0).")


def random_scribbles(count: int, rng: np.random.Generator, size: int = PAD_SIZE) -> list:
    """`count` scribbles as the pad records them: 1-4 smooth random strokes each, 15-60 points apiece.

    Each stroke is a walk of 6-14 pixel steps whose turning rate itself wanders, so it curls
    and turns several times, as no digit does; it bounces off a 10-pixel margin to stay on the canvas.
    """
    _check_count_and_rng(count, rng)
    margin = 10.0
    scribbles = []
    for _ in range(count):
        strokes = []
        for _ in range(rng.integers(1, 5)):
            position = rng.uniform(0.2 * size, 0.8 * size, size=2)
            heading = rng.uniform(0.0, 2 * np.pi)
            turning = 0.0
            points = [tuple(position)]
            for _ in range(rng.integers(15, 61) - 1):
                # Momentum in the heading: the turning rate changes slowly, giving smooth curves.
                turning = 0.8 * turning + rng.normal(0.0, 0.25)
                heading += turning
                step = rng.uniform(6.0, 14.0) * np.array([np.cos(heading), np.sin(heading)])
                for axis in range(2):
                    if not margin <= position[axis] + step[axis] <= size - margin:
                        step[axis] = -step[axis]
                        heading = np.pi - heading if axis == 0 else -heading
                position = np.clip(position + step, margin, size - margin)
                points.append((float(position[0]), float(position[1])))
            strokes.append(points)
        scribbles.append(strokes)
    return scribbles


def partial_strokes(drawings, rng: np.random.Generator, size: int = PAD_SIZE) -> list:
    """A fragment of each drawing: a random contiguous 25-45% of its pen path, refitted to the pad.

    The share is counted in points along the strokes joined end to end (at least 2 points); where
    the fragment spans a pen lift it keeps the lift. A fragment of a digit is not a digit.
    """
    _check_count_and_rng(None, rng)
    fragments = []
    for index, drawing in enumerate(drawings):
        # The path end to end, each point with the number of its stroke, to keep pen lifts.
        path = [(number, tuple(point)) for number, stroke in enumerate(drawing) for point in stroke]
        if len(path) < 2:
            raise ValueError(f"drawing {index} has {len(path)} point(s); a fragment needs a drawing "
                             "of at least 2 points.")
        kept = min(len(path), max(2, round(rng.uniform(0.25, 0.45) * len(path))))
        start = int(rng.integers(0, len(path) - kept + 1))
        pieces: dict[int, list] = {}
        for number, point in path[start:start + kept]:
            pieces.setdefault(number, []).append(point)
        fragments.append(fit_strokes_to_pad(list(pieces.values()), size=size))
    return fragments


# ==================== Non-digits made here: images ====================================


def blob_images(count: int, rng: np.random.Generator, size: int = 112) -> np.ndarray:
    """`count` images (count, size, size) float32 in [0, 1]: 1-5 soft light ellipses on black."""
    _check_count_and_rng(count, rng)
    rows, columns = np.mgrid[0:size, 0:size] + 0.5
    images = np.zeros((count, size, size), dtype=np.float32)
    for image in images:
        for _ in range(rng.integers(1, 6)):
            centre_x, centre_y = rng.uniform(0.15 * size, 0.85 * size, size=2)
            half_width, half_height = rng.uniform(0.05 * size, 0.3 * size, size=2)
            angle = rng.uniform(0.0, np.pi)
            along = (columns - centre_x) * np.cos(angle) + (rows - centre_y) * np.sin(angle)
            across = (rows - centre_y) * np.cos(angle) - (columns - centre_x) * np.sin(angle)
            inside = (along / half_width) ** 2 + (across / half_height) ** 2 <= 1.0
            np.maximum(image, inside * rng.uniform(0.5, 1.0), out=image)
        image[:] = ndimage.gaussian_filter(image, sigma=rng.uniform(0.01, 0.04) * size)
        image /= image.max()  # the smallest ellipse still covers pixels, so the maximum is above 0
    return images


def noise_images(count: int, rng: np.random.Generator, size: int = 112) -> np.ndarray:
    """`count` images (count, size, size) float32 in [0, 1] of noise, the three kinds taking turns:
    uniform noise, Gaussian noise smoothed with a random sigma of 0-3 pixels and stretched to the
    full range, and salt and pepper on a grey level.
    """
    _check_count_and_rng(count, rng)
    images = np.zeros((count, size, size), dtype=np.float32)
    for index, image in enumerate(images):
        kind = index % 3
        if kind == 0:
            image[:] = rng.random((size, size))
        elif kind == 1:
            noise = ndimage.gaussian_filter(rng.normal(size=(size, size)), sigma=rng.uniform(0.0, 3.0))
            # Smoothing shrinks the spread; stretching it back keeps the contrast of the other kinds.
            image[:] = (noise - noise.min()) / (noise.max() - noise.min())
        else:
            image[:] = rng.uniform(0.2, 0.8)
            specks = rng.random((size, size)) < rng.uniform(0.05, 0.3)
            image[specks] = rng.integers(0, 2, size=int(specks.sum()))
    return images


def blank_paper_photos(count: int, rng: np.random.Generator, size: int = 200) -> np.ndarray:
    """`count` images (count, size, size) float32 in [0, 255] like a phone photo of an empty sheet.

    Bright paper (180-240) darkened by 20-80 levels across the page by uneven light (a gradient
    in a random direction mixed with a vignette), plus sensor noise of sigma 1-4, and no ink.
    Their contrast is far above the 5% that prepare_digit_image takes for a blank image, so it
    prepares them: refusing them is left to the reader, which is what they measure.
    """
    _check_count_and_rng(count, rng)
    rows, columns = (np.mgrid[0:size, 0:size] + 0.5) / size - 0.5
    images = np.zeros((count, size, size), dtype=np.float32)
    for image in images:
        angle = rng.uniform(0.0, 2 * np.pi)
        gradient = columns * np.cos(angle) + rows * np.sin(angle)
        vignette = (columns - rng.uniform(-0.2, 0.2)) ** 2 + (rows - rng.uniform(-0.2, 0.2)) ** 2
        shadow = rng.uniform(0.3, 1.0) * gradient + rng.uniform(0.0, 1.0) * vignette
        shadow = (shadow - shadow.min()) / (shadow.max() - shadow.min())
        paper = rng.uniform(180.0, 240.0) - rng.uniform(20.0, 80.0) * shadow
        image[:] = np.clip(paper + rng.normal(0.0, rng.uniform(1.0, 4.0), size=(size, size)), 0.0, 255.0)
    return images


def digit_pairs(images, rng: np.random.Generator, count: int) -> np.ndarray:
    """`count` images (count, 28, 56) float32 in [0, 1]: two different digit images side by side.

    `images` is an array (N, 28, 28) of MNIST-style digits in [0, 1], light on dark, N >= 2.
    The right digit sits 0-3 pixels higher or lower than the left one, as a hand writes.
    """
    _check_count_and_rng(count, rng)
    images = np.asarray(images)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or len(images) < 2:
        raise ValueError(f"images has shape {images.shape}; pass an array (N, 28, 28) of at least 2 digits.")
    if not (np.all(np.isfinite(images)) and images.min() >= 0.0 and images.max() <= 1.0):
        raise ValueError("images must hold values in [0, 1]; divide MNIST's 0-255 pixels by 255 first.")
    pairs = np.zeros((count, 28, 56), dtype=np.float32)
    for pair in pairs:
        left, right = rng.choice(len(images), size=2, replace=False)
        shift = int(rng.integers(-3, 4))
        pair[:, :28] = images[left]
        # Shifting with zeros, not np.roll, so no ink wraps from one edge to the other.
        if shift >= 0:
            pair[shift:, 28:] = images[right][:28 - shift]
        else:
            pair[:shift, 28:] = images[right][-shift:]
    return pairs
