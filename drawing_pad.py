"""The drawing pad's Python side: a widget to draw a digit in the notebook and see what the reader answers.

The browser half is drawing_pad.js (an anywidget ES module, no build step, nothing from the
network): it records each stroke as canvas coordinates and sends the strokes when one ends.
Here they are drawn, prepared and read by two readers (`reader.Reader`): the best single model
and the ensemble, each with its verdict (a digit, "not sure: 7 or 1" or "not a digit").
"""

from __future__ import annotations

from pathlib import Path

import anywidget
import numpy as np
import traitlets

import reader


class DigitReading:
    """What two readers answer for one drawing: the drawn image, the prepared 28x28 field and both readings."""

    def __init__(self, drawing, prepared, best_label: str, best: reader.Reading, ensemble_label: str,
                 ensemble: reader.Reading):
        self.drawing, self.prepared = drawing, prepared
        self.best_label, self.best = best_label, best
        self.ensemble_label, self.ensemble = ensemble_label, ensemble


def read_drawing(strokes, best_reader: reader.Reader, ensemble_reader: reader.Reader,
                 size: int = reader.PAD_SIZE, pen_width: float = reader.PEN_WIDTH) -> DigitReading:
    """Draw `strokes` (see `reader.strokes_to_image`), prepare them as predict.py prepares a file, read them twice."""
    drawing = reader.strokes_to_image(strokes, size=size, pen_width=pen_width)
    prepared = reader.prepare_strokes(strokes, size=size, pen_width=pen_width)
    return DigitReading(drawing, prepared, f"best model ({best_reader.label})", best_reader.read(prepared)[0],
                        f"ensemble of {len(ensemble_reader.models)}", ensemble_reader.read(prepared)[0])


def _check_readers(best_reader, ensemble_reader) -> None:
    for name, value in (("best_reader", best_reader), ("ensemble_reader", ensemble_reader)):
        if not isinstance(value, reader.Reader):
            raise ValueError(f"{name} is a {type(value).__name__}; pass a reader.Reader "
                             "(reader.load_reader(folder) or reader.Reader(models, temperatures)).")


class DrawingPad(anywidget.AnyWidget):
    """A pad to draw a digit on in the notebook, showing what the best model and the ensemble answer.

    Works in JupyterLab 4, Notebook 7 and VS Code, offline. The browser shows the prepared
    image, each verdict as text (elements of class pad-best-digit and pad-ensemble-digit) and
    the ten calibrated probabilities as bars. `pad.read(strokes)` gives the same reading
    without a browser.
    """

    _esm = (Path(__file__).resolve().parent / "drawing_pad.js").read_text(encoding="utf-8")
    size = traitlets.Int(reader.PAD_SIZE).tag(sync=True)
    pen_width = traitlets.Float(reader.PEN_WIDTH).tag(sync=True)
    strokes = traitlets.List().tag(sync=True)  # from the browser: [[[x, y], ...], ...]
    reading = traitlets.Dict().tag(sync=True)  # to the browser: what the readers answer, or a message

    def __init__(self, best_reader: reader.Reader, ensemble_reader: reader.Reader, size: int = reader.PAD_SIZE,
                 pen_width: float = reader.PEN_WIDTH):
        _check_readers(best_reader, ensemble_reader)
        self.best_reader, self.ensemble_reader = best_reader, ensemble_reader
        super().__init__(size=size, pen_width=pen_width)

    def read(self, strokes) -> DigitReading:
        """What the readers answer for `strokes`, drawn with this pad's canvas size and pen."""
        return read_drawing(strokes, self.best_reader, self.ensemble_reader, self.size, self.pen_width)

    def __repr__(self) -> str:
        # What a notebook shows where no browser runs the widget (nbconvert, GitHub): no memory address.
        return (f"DrawingPad for {self.best_reader.label} and an ensemble of {len(self.ensemble_reader.models)}: "
                "draw a digit here when the notebook runs live in JupyterLab, Notebook 7 or VS Code.")

    @traitlets.observe("strokes")
    def _read_new_strokes(self, change):
        # The stroke count tells the browser which drawing a reading belongs to.
        if not change["new"]:
            self.reading = {"strokes": 0}
            return
        try:
            reading = self.read(change["new"])
        except ValueError as error:
            self.reading = {"strokes": len(change["new"]), "message": str(error)}
            return
        self.reading = {
            "strokes": len(change["new"]),
            "prepared": np.round(reading.prepared.ravel(), 3).tolist(),
            "best": {"label": reading.best_label, "text": reading.best.text, **reading.best.as_dict()},
            "ensemble": {"label": reading.ensemble_label, "text": reading.ensemble.text,
                         **reading.ensemble.as_dict()},
        }
