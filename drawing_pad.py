"""The drawing pad's Python side: a widget to draw a digit in the notebook and see what the reader answers.

The browser half is drawing_pad.js (an anywidget ES module, no build step, nothing from the
network): it records each stroke as canvas coordinates and sends the strokes when one ends.
Here they are drawn, prepared and read by two readers (`reader.Reader`): the best single model
and the ensemble, each with its verdict (a digit, "not sure: 7 or 1" or "not a digit").

Under the prepared image, the pad shows where the best model looked: integrated gradients of the digit it
read (`saliency.integrated_gradients`, drawn as `saliency.heatmap`), the same map the notebook shows.

The pad can also be taught a person's hand: after a reading, they say which digit the drawing
was, and both readers are adapted to all the examples given so far (`reader.Reader.adapted`,
always from the trained readers), which can be saved to a file and loaded again.
"""

from __future__ import annotations

import time
import weakref
from pathlib import Path

import anywidget
import numpy as np
import traitlets

import reader
import saliency


class DigitReading:
    """What two readers answer for one drawing: the drawn image, the prepared 28x28 field and both readings."""

    def __init__(self, drawing, prepared, best_label: str, best: reader.Reading, ensemble_label: str,
                 ensemble: reader.Reading):
        self.drawing, self.prepared = drawing, prepared
        self.best_label, self.best = best_label, best
        self.ensemble_label, self.ensemble = ensemble_label, ensemble


def _adapted_suffix(digit_reader: reader.Reader) -> str:
    return ", adapted" if len(digit_reader.examples[1]) else ""


def read_drawing(strokes, best_reader: reader.Reader, ensemble_reader: reader.Reader,
                 size: int = reader.PAD_SIZE, pen_width: float = reader.PEN_WIDTH) -> DigitReading:
    """Draw `strokes` (see `reader.strokes_to_image`), prepare them as predict.py prepares a file, read them twice.

    A reader adapted to a person's examples (`reader.Reader.adapted`) says so in its label.
    """
    drawing = reader.strokes_to_image(strokes, size=size, pen_width=pen_width)
    prepared = reader.prepare_strokes(strokes, size=size, pen_width=pen_width)
    return DigitReading(drawing, prepared, f"best model ({best_reader.label}){_adapted_suffix(best_reader)}",
                        best_reader.read(prepared)[0],
                        f"ensemble of {len(ensemble_reader.models)}{_adapted_suffix(ensemble_reader)}",
                        ensemble_reader.read(prepared)[0])


# The Keras model behind each of a reader's ONNX exports, loaded once.
_keras_models = weakref.WeakKeyDictionary()


def keras_model_of(model):
    """The Keras model to explain for one of a reader's members: the model itself if it has layers.

    A member read from its ONNX export (`reader.OnnxModel`, which has a `path` and no gradients) is
    explained with the Keras model it was exported from, <name>.keras beside it, loaded once. Raises
    FileNotFoundError, naming that file, where it is missing.
    """
    if hasattr(model, "layers"):
        return model
    if model not in _keras_models:
        _keras_models[model] = reader.load_model(Path(model.path).with_suffix(".keras"))
    return _keras_models[model]


def where_it_looked(prepared, digit_reader: reader.Reader, digit: int) -> np.ndarray:
    """Where `digit_reader`'s networks looked for `digit` in a prepared 28x28 image: a display map (28, 28) in [0, 1].

    Integrated gradients of the log-probability of `digit` (`saliency.integrated_gradients`, with the
    reader's adapted last layers if it was adapted), as `saliency.heatmap` draws them.
    """
    heads = [digit_reader.heads.get(name) for name in digit_reader.models]
    networks = [keras_model_of(model) for model in digit_reader.models.values()]
    return saliency.heatmap(saliency.integrated_gradients(networks, prepared, digit, heads=heads)[0])


def _check_readers(best_reader, ensemble_reader) -> None:
    for name, value in (("best_reader", best_reader), ("ensemble_reader", ensemble_reader)):
        if not isinstance(value, reader.Reader):
            raise ValueError(f"{name} is a {type(value).__name__}; pass a reader.Reader "
                             "(reader.load_reader(folder) or reader.Reader(models, temperatures)).")


def _check_digit(digit) -> int:
    if isinstance(digit, bool) or not isinstance(digit, (int, np.integer)) or not 0 <= digit <= 9:
        raise ValueError(f"digit {digit!r}: say which digit the drawing was with a whole number from 0 to 9.")
    return int(digit)


def short_text(reading: reader.Reading) -> str:
    """A verdict in a few characters, for an example's thumbnail: "7", "7 or 1?" or "not a digit"."""
    if reading.verdict == "digit":
        return str(reading.digit)
    if reading.verdict == "not sure":
        return f"{reading.candidates[0]} or {reading.candidates[1]}?"
    return "not a digit"


def _one_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


class DrawingPad(anywidget.AnyWidget):
    """A pad to draw a digit on in the notebook, showing what the best model and the ensemble answer.

    Works in JupyterLab 4, Notebook 7 and VS Code, offline. The browser shows the prepared
    image, each verdict as text (elements of class pad-best-digit and pad-ensemble-digit) and
    the ten calibrated probabilities as bars. `pad.read(strokes)` gives the same reading
    without a browser. Under the prepared image, where the best model looked for the digit it read
    (`where_it_looked`, in `saliency`); none for "not a digit", which names no digit to explain.

    Teach mode: `pad.teach(strokes, digit)` (or a click on "it was: 7" under a drawing) adds
    the prepared drawing to the person's examples and adapts both readers to all of them, from
    the trained readers given here (`base_best_reader`, `base_ensemble_reader`); readings then
    come from the adapted readers. `save_examples(path)`, `load_examples(path)` and
    `reset_examples()` keep, restore or forget them. The page shows each example with what the
    trained and the adapted readers read in it, and how long adapting took.
    """

    _esm = (Path(__file__).resolve().parent / "drawing_pad.js").read_text(encoding="utf-8")
    size = traitlets.Int(reader.PAD_SIZE).tag(sync=True)
    pen_width = traitlets.Float(reader.PEN_WIDTH).tag(sync=True)
    strokes = traitlets.List().tag(sync=True)  # from the browser: [[[x, y], ...], ...]
    reading = traitlets.Dict().tag(sync=True)  # to the browser: what the readers answer, or a message
    # To the browser, after each reading: where the best model looked, its 784 values in [0, 1] row by row,
    # the digit explained and the seconds it took; only "strokes" where there is no digit to explain, and
    # a "message" where the model cannot be explained.
    saliency = traitlets.Dict().tag(sync=True)
    # From the browser: {"action": "teach", "digit": 7} or "save"/"load" with "path", or "reset"; "id" numbers it.
    command = traitlets.Dict().tag(sync=True)
    # To the browser: the examples (thumbnails, before and after readings), a note, a message, the command done.
    teach_state = traitlets.Dict().tag(sync=True)

    def __init__(self, best_reader: reader.Reader, ensemble_reader: reader.Reader, size: int = reader.PAD_SIZE,
                 pen_width: float = reader.PEN_WIDTH):
        _check_readers(best_reader, ensemble_reader)
        self.base_best_reader, self.base_ensemble_reader = best_reader, ensemble_reader
        self.best_reader, self.ensemble_reader = best_reader, ensemble_reader
        self._example_images = np.zeros((0, reader.IMAGE_SIZE, reader.IMAGE_SIZE), dtype=np.float32)
        self._example_digits = np.zeros(0, dtype=np.int64)
        self.adapt_seconds = None  # how long the last adaptation of both readers took
        super().__init__(size=size, pen_width=pen_width)
        self.teach_state = self._teach_state()
        # The best model's gradient is traced once here (most of a second for a residual network), not on
        # the first drawing: each map then takes a few hundredths of a second. A model that cannot be
        # explained says so under each reading instead.
        try:
            where_it_looked(np.zeros((reader.IMAGE_SIZE, reader.IMAGE_SIZE), dtype=np.float32), best_reader, 0)
        except (FileNotFoundError, ValueError):
            pass

    def read(self, strokes) -> DigitReading:
        """What the readers answer for `strokes`, drawn with this pad's canvas size and pen (adapted once taught)."""
        return read_drawing(strokes, self.best_reader, self.ensemble_reader, self.size, self.pen_width)

    # ---- Teaching the pad one person's hand ----

    @property
    def examples(self) -> tuple[np.ndarray, np.ndarray]:
        """The person's examples so far: (prepared images (N, 28, 28) in [0, 1], digits (N,))."""
        return self._example_images.copy(), self._example_digits.copy()

    def teach(self, strokes, digit) -> DigitReading:
        """Learn that `strokes` (None: the drawing on the pad) are `digit`; returns their reading now.

        Both readers are adapted again from the trained ones with every example so far.
        """
        digit = _check_digit(digit)
        if strokes is None:
            strokes = self.strokes
        if len(strokes) == 0:
            raise ValueError("nothing is drawn on the pad; draw the digit first, then say which it was.")
        prepared = reader.prepare_strokes(strokes, self.size, self.pen_width)
        self._adapt(np.concatenate([self._example_images, prepared[np.newaxis]]),
                    np.append(self._example_digits, digit))
        return self.read(strokes)

    def save_examples(self, path) -> Path:
        """Save the examples as JSON (`reader.save_examples`); a relative path is in the working folder."""
        path = self._examples_path(path)
        if not len(self._example_digits):
            raise ValueError("no examples to save yet; draw a digit, say which it was, then save.")
        if not path.parent.is_dir():
            raise FileNotFoundError(f"{path.parent}: no such folder; create it or save in an existing folder.")
        try:
            return reader.save_examples(path, self._example_images, self._example_digits)
        except OSError as error:
            raise ValueError(f"{path}: cannot be written ({error.strerror or error}); "
                             "choose a file in a folder you can write to.") from error

    def load_examples(self, path) -> tuple[np.ndarray, np.ndarray]:
        """Replace the examples by those saved in `path` and adapt both readers to them; returns them."""
        path = self._examples_path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file of examples; type the name they were saved under.")
        images, digits = reader.load_examples(path)
        if len(digits):
            self._adapt(images.astype(np.float32), digits)
        else:
            self.reset_examples()
        return self.examples

    def reset_examples(self) -> None:
        """Forget the examples: back to the trained readers."""
        self.best_reader, self.ensemble_reader = self.base_best_reader, self.base_ensemble_reader
        self._example_images = self._example_images[:0]
        self._example_digits = self._example_digits[:0]
        self.adapt_seconds = None
        self._refresh()

    @staticmethod
    def _examples_path(path) -> Path:
        name = str(path).strip() if path is not None else ""
        if not name:
            raise ValueError("no file name; type one for the examples, e.g. my_digits.json.")
        path = Path(name).expanduser()
        if not path.suffix:
            path = path.with_suffix(".json")
        return path if path.is_absolute() else Path.cwd() / path

    def _adapt(self, images, digits) -> None:
        # Always from the trained readers with every example: teaching again never compounds.
        start = time.perf_counter()
        best_reader = self.base_best_reader.adapted(images, digits)
        ensemble_reader = self.base_ensemble_reader.adapted(images, digits)
        self.adapt_seconds = time.perf_counter() - start
        self.best_reader, self.ensemble_reader = best_reader, ensemble_reader
        self._example_images, self._example_digits = np.asarray(images, dtype=np.float32), np.asarray(digits)
        self._refresh()

    def _refresh(self) -> None:
        # The drawing on the pad is read again by the readers now in use, and the examples shown anew.
        self._show(self.strokes)
        self.teach_state = self._teach_state()

    def _teach_state(self) -> dict:
        count = len(self._example_digits)
        examples = [{"digit": int(digit), "pixels": np.round(image, 2).ravel().tolist()}
                    for image, digit in zip(self._example_images, self._example_digits)]
        for key, base, adapted in (("best", self.base_best_reader, self.best_reader),
                                   ("ensemble", self.base_ensemble_reader, self.ensemble_reader)):
            if not count:
                break
            # The adapted reader keeps the trained networks: their outputs serve both readings.
            outputs = base.outputs(self._example_images)
            for example, before, after in zip(examples, base.read_outputs(outputs), adapted.read_outputs(outputs)):
                example[key] = {"before": short_text(before), "after": short_text(after)}
        note = (f"adapted to your {_plural(count, 'example')} (adapted in {self.adapt_seconds:.2f} s)"
                if count else "")
        return {"count": count, "examples": examples, "note": note,
                "seconds": None if self.adapt_seconds is None else round(self.adapt_seconds, 3),
                "message": "", "error": False, "done": None}

    def __repr__(self) -> str:
        # What a notebook shows where no browser runs the widget (nbconvert, GitHub): no memory address.
        return (f"DrawingPad for {self.best_reader.label} and an ensemble of {len(self.ensemble_reader.models)}: "
                "draw a digit here when the notebook runs live in JupyterLab, Notebook 7 or VS Code.")

    # ---- What the browser sends ----

    def _show(self, strokes) -> None:
        # The reading first, so that the page shows it at once; then where the best model looked.
        # The stroke count tells the browser which drawing each belongs to.
        reading, message = None, None
        if strokes:
            try:
                reading = self.read(strokes)
            except ValueError as error:
                message = str(error)
        self.reading = self._reading_of(strokes, reading, message)
        self.saliency = self._saliency_of(strokes, reading)

    def _saliency_of(self, strokes, reading: DigitReading | None) -> dict:
        # "Not a digit" names no digit: a map of the most likely one would explain a reading never given.
        if reading is None or reading.best.verdict == "not a digit":
            return {"strokes": len(strokes)}
        digit = reading.best.candidates[0]
        start = time.perf_counter()
        try:
            looked = where_it_looked(reading.prepared, self.best_reader, digit)
        except (FileNotFoundError, ValueError) as error:
            return {"strokes": len(strokes), "message": f"no map of where it looked: {_one_line(error)}"}
        seconds = time.perf_counter() - start
        return {"strokes": len(strokes), "model": self.best_reader.label + _adapted_suffix(self.best_reader),
                "digit": digit, "heatmap": np.round(looked.ravel(), 3).tolist(), "seconds": round(seconds, 3)}

    def _reading_of(self, strokes, reading: DigitReading | None, message: str | None) -> dict:
        if not strokes:
            return {"strokes": 0}
        if reading is None:
            return {"strokes": len(strokes), "message": message}
        adapted = {"adapted": len(self._example_digits)} if len(self._example_digits) else {}
        return {
            "strokes": len(strokes),
            "prepared": np.round(reading.prepared.ravel(), 3).tolist(),
            "best": {"label": reading.best_label, "text": reading.best.text, **reading.best.as_dict()},
            "ensemble": {"label": reading.ensemble_label, "text": reading.ensemble.text,
                         **reading.ensemble.as_dict()},
            **adapted,
        }

    @traitlets.observe("strokes")
    def _read_new_strokes(self, change):
        self._show(change["new"])

    @traitlets.observe("command")
    def _run_command(self, change):
        # A click on the page: its outcome is one line on the page, never a traceback in the kernel's log.
        command = change["new"] or {}
        action = command.get("action")
        try:
            if action == "teach":
                self.teach(None, command.get("digit"))
                count = len(self._example_digits)
                message = (f"taught: that was a {self._example_digits[-1]}; {_plural(count, 'example')} "
                           f"in all, adapted in {self.adapt_seconds:.2f} s")
            elif action == "save":
                path = self.save_examples(command.get("path"))
                message = f"saved {_plural(len(self._example_digits), 'example')} to {path}"
            elif action == "load":
                path = self._examples_path(command.get("path"))
                self.load_examples(path)
                message = f"loaded {_plural(len(self._example_digits), 'example')} from {path}"
            elif action == "reset":
                self.reset_examples()
                message = "reset: the trained readers again, no examples"
            else:
                raise ValueError(f"unknown command {action!r}; the pad knows teach, save, load and reset.")
        except (ValueError, OSError) as error:
            message, failed = _one_line(error), True
        except Exception as error:  # noqa: BLE001 -- anything else still ends as one line on the page
            message, failed = f"could not {action}: {type(error).__name__}: {_one_line(error)}", True
        else:
            failed = False
        # The examples were shown anew by the command itself; what is left to say is how it went.
        self.teach_state = {**self.teach_state, "message": message, "error": failed, "done": command.get("id")}
