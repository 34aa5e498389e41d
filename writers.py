"""Who wrote each MNIST digit: QMNIST's writer ids, a validation split made of whole writers, and
accuracy per writer.

MNIST does not say who wrote a digit; QMNIST (Yadav and Bottou 2019) traced each one to its NIST
writer and series (0: Census Bureau employees, 4: high-school students). Its training rows match
MNIST's 60,000 training digits in order, and its first 10,000 test rows match MNIST's test set.
"""

from __future__ import annotations

import gzip
import warnings
import zlib
from pathlib import Path

import numpy as np

TRAIN_FILE = "qmnist-train-labels.tsv.gz"
TEST_FILE = "qmnist-test-labels.tsv.gz"
SERIES_NAMES = {0: "Census Bureau employees", 4: "high-school students"}


def read_qmnist_labels(path, labels) -> tuple[np.ndarray, np.ndarray]:
    """The writer id and NIST series of each digit in `labels`, from one QMNIST label file.

    The file's first len(labels) rows must be those digits in the same order: a class that
    disagrees with `labels` means the file belongs to other images, and says so.
    """
    path = Path(path)
    labels = np.asarray(labels)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; copy QMNIST's extended labels there "
                                "(see ../shared/data/qmnist/README.md) or run without writer ids.")
    try:
        with gzip.open(path, "rt") as file, warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # an empty file: the row count below says so
            rows = np.loadtxt(file, dtype=np.int64, usecols=(0, 1, 2), max_rows=len(labels), ndmin=2)
    except (OSError, EOFError, zlib.error, UnicodeDecodeError, ValueError) as error:
        raise ValueError(f"{path}: not a gzipped table of QMNIST labels ({type(error).__name__}: {error}); "
                         "copy the file again from ../shared/data/qmnist.") from error
    if len(rows) < len(labels):
        raise ValueError(f"{path}: has {len(rows):,} rows for {len(labels):,} MNIST digits; "
                         "copy the full file again from ../shared/data/qmnist.")
    disagree = np.flatnonzero(rows[:, 0] != labels)
    if len(disagree):
        raise ValueError(f"{path}: its class disagrees with MNIST's label on {len(disagree):,} digits (first at row "
                         f"{disagree[0]}); the file does not belong to these images, copy the right one.")
    return rows[:, 2], rows[:, 1]


def load_writers(folder, train_labels, test_labels) -> dict:
    """{"train": {"writer", "series"}, "test": {...}}: arrays aligned with MNIST's training and test digits."""
    folder = Path(folder)
    writers = {}
    for part, file_name, labels in (("train", TRAIN_FILE, train_labels), ("test", TEST_FILE, test_labels)):
        writer, series = read_qmnist_labels(folder / file_name, labels)
        writers[part] = {"writer": writer, "series": series}
    return writers


def split_by_writer(writer_ids, series, validation_split: float, seed: int = 0):
    """Indices (fit, validation) of a split made of whole writers, `validation_split` of each series.

    Within each series the writers are shuffled with `seed` and taken until their digits reach
    the series' share; every writer wrote every digit about equally often, so the classes stay
    balanced with them. No writer has digits on both sides.
    """
    if not 0.0 < validation_split < 1.0:
        raise ValueError(f"validation_split={validation_split!r}; use a fraction between 0 and 1, such as 0.2.")
    writer_ids, series = np.asarray(writer_ids), np.asarray(series)
    if len(writer_ids) != len(series):
        raise ValueError(f"{len(writer_ids)} writer ids and {len(series)} series; give one of each per digit.")
    rng = np.random.default_rng(seed)
    in_validation = np.zeros(len(writer_ids), dtype=bool)
    for each_series in np.unique(series):
        of_series = series == each_series
        ids, counts = np.unique(writer_ids[of_series], return_counts=True)
        order = rng.permutation(len(ids))
        # The writers whose digits, added in shuffled order, come closest to the series' share.
        cumulative = np.cumsum(counts[order])
        taken = int(np.argmin(np.abs(cumulative - validation_split * of_series.sum()))) + 1
        in_validation |= of_series & np.isin(writer_ids, ids[order[:taken]])
    return np.flatnonzero(~in_validation), np.flatnonzero(in_validation)


def accuracy_by_writer(correct, writer_ids) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(writer ids, digits per writer, accuracy per writer) for a boolean array of right readings."""
    ids, inverse, counts = np.unique(np.asarray(writer_ids), return_inverse=True, return_counts=True)
    right = np.bincount(inverse, weights=np.asarray(correct, dtype=np.float64), minlength=len(ids))
    return ids, counts, right / counts


def writers_with_digits(writer_ids, labels, minimum_per_digit: int) -> np.ndarray:
    """The writers who wrote every digit at least `minimum_per_digit` times."""
    writer_ids, labels = np.asarray(writer_ids), np.asarray(labels)
    ids = np.unique(writer_ids)
    counts = np.stack([np.bincount(labels[writer_ids == writer], minlength=10) for writer in ids])
    return ids[(counts >= minimum_per_digit).all(axis=1)]


def summary_by_writer(correct, writer_ids) -> dict:
    """Accuracy over all digits, the mean over writers and the worst writer (with its id)."""
    ids, counts, accuracies = accuracy_by_writer(correct, writer_ids)
    worst = int(np.argmin(accuracies))
    return {"accuracy": float(np.mean(correct)), "mean_writer": float(accuracies.mean()),
            "worst_writer": float(accuracies[worst]), "worst_writer_id": int(ids[worst]), "writers": int(len(ids))}
