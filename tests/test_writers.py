"""writers: QMNIST's writer ids read and checked against MNIST's labels, a validation split of whole writers,
and accuracy per writer.

The real label files are read from ../shared/data/qmnist (skipped when that folder is absent, or without
MNIST_DIR); every broken file is one the test writes itself.
"""

import gzip

import numpy as np
import pytest

import writers
from conftest import PROJECT_ROOT

QMNIST_DIR = PROJECT_ROOT.parent / "shared" / "data" / "qmnist"


def write_table(path, rows):
    """A gzipped QMNIST-style table: one tab-separated line per row of eight integers (or any text)."""
    with gzip.open(path, "wt") as file:
        file.writelines("\t".join(map(str, row)) + "\n" for row in rows)
    return path


def qmnist_rows(labels, series=0, first_writer=100, digits_per_writer=4):
    """Eight columns as QMNIST writes them: class, series, writer, the digit's index for its writer, the rest 0."""
    return [[int(label), series, first_writer + index // digits_per_writer, index % digits_per_writer, 30 + label,
             index, 0, 0] for index, label in enumerate(labels)]


LABELS = np.array([5, 0, 4, 1, 9, 2, 1, 3, 1, 4])


# ==================== Reading QMNIST's label files ====================================


@pytest.fixture(scope="module")
def real_writers(mnist_dir):
    """The writer ids of MNIST's training and test digits, from the real QMNIST files."""
    import helpers

    if not QMNIST_DIR.is_dir():
        pytest.skip(f"{QMNIST_DIR} is not here")
    (_, train_labels), (_, test_labels) = helpers.load_mnist(mnist_dir)
    return writers.load_writers(QMNIST_DIR, train_labels, test_labels), train_labels, test_labels


def test_the_real_files_give_one_writer_per_mnist_digit(real_writers):
    found, train_labels, test_labels = real_writers
    assert set(found) == {"train", "test"}
    for part, labels in (("train", train_labels), ("test", test_labels)):
        assert set(found[part]) == {"writer", "series"}
        assert len(found[part]["writer"]) == len(found[part]["series"]) == len(labels)
        assert set(np.unique(found[part]["series"]).tolist()) == set(writers.SERIES_NAMES)
    # The README's measured facts: 539 training writers, 297 other test writers.
    assert len(np.unique(found["train"]["writer"])) == 539
    assert len(np.unique(found["test"]["writer"])) == 297
    assert not set(found["train"]["writer"].tolist()) & set(found["test"]["writer"].tolist())


def test_the_real_files_disagree_with_shuffled_labels(real_writers):
    # The same file read against labels in another order: the check that ties the file to MNIST bites.
    _, train_labels, _ = real_writers
    with pytest.raises(ValueError, match=r"qmnist-train-labels\.tsv\.gz: its class disagrees"):
        writers.read_qmnist_labels(QMNIST_DIR / writers.TRAIN_FILE, np.roll(train_labels, 1))


def test_a_good_table_gives_writers_and_series_in_order(tmp_path):
    rows = qmnist_rows(LABELS, series=4) + qmnist_rows([7, 7], series=0, first_writer=900)  # extra rows are ignored
    writer_ids, series = writers.read_qmnist_labels(write_table(tmp_path / "labels.tsv.gz", rows), LABELS)
    np.testing.assert_array_equal(writer_ids, [100, 100, 100, 100, 101, 101, 101, 101, 102, 102])
    np.testing.assert_array_equal(series, [4] * 10)


def broken_files(folder):
    """(name, path) of each way a label file can be wrong for LABELS."""
    good = write_table(folder / "good.tsv.gz", qmnist_rows(LABELS)).read_bytes()
    (folder / "plain.tsv.gz").write_text("5\t0\t100\t0\t35\t0\t0\t0\n")
    (folder / "truncated.tsv.gz").write_bytes(good[:len(good) // 2])
    write_table(folder / "short.tsv.gz", qmnist_rows(LABELS[:6]))
    wrong = qmnist_rows(LABELS)
    wrong[3][0] = 7
    write_table(folder / "disagrees.tsv.gz", wrong)
    words = qmnist_rows(LABELS)
    words[2][2] = "writer"
    write_table(folder / "words.tsv.gz", words)
    write_table(folder / "two_columns.tsv.gz", [row[:2] for row in qmnist_rows(LABELS)])
    return folder


@pytest.mark.parametrize("name, error, message", [
    ("missing.tsv.gz", FileNotFoundError, "no such file"),
    ("plain.tsv.gz", ValueError, "not a gzipped table of QMNIST labels"),
    ("truncated.tsv.gz", ValueError, "not a gzipped table of QMNIST labels"),
    ("short.tsv.gz", ValueError, "has 6 rows for 10 MNIST digits"),
    ("disagrees.tsv.gz", ValueError, "disagrees with MNIST's label on 1 digits (first at row 3)"),
    ("words.tsv.gz", ValueError, "not a gzipped table of QMNIST labels"),
    ("two_columns.tsv.gz", ValueError, "not a gzipped table of QMNIST labels"),
])
def test_a_broken_label_file_is_named_in_one_line(tmp_path, name, error, message):
    path = broken_files(tmp_path) / name
    with pytest.raises(error) as raised:
        writers.read_qmnist_labels(path, LABELS)
    text = str(raised.value)
    assert text.startswith(f"{path}: ") and message in text
    assert "\n" not in text and ("copy" in text or "run without writer ids" in text)  # and says what to do
    assert type(raised.value) is error  # not a subclass such as gzip.BadGzipFile escaping unwrapped


def test_load_writers_names_the_missing_file(tmp_path):
    write_table(tmp_path / writers.TRAIN_FILE, qmnist_rows(LABELS))
    with pytest.raises(FileNotFoundError, match=writers.TEST_FILE):
        writers.load_writers(tmp_path, LABELS, LABELS[:4])
    write_table(tmp_path / writers.TEST_FILE, qmnist_rows(LABELS[:4], series=4, first_writer=500))
    found = writers.load_writers(tmp_path, LABELS, LABELS[:4])
    np.testing.assert_array_equal(found["test"]["writer"], [500] * 4)
    np.testing.assert_array_equal(found["train"]["series"], [0] * 10)


# ==================== A validation split of whole writers ============================


def synthetic_writers(rng, writers_per_series=(60, 40), digits_per_writer=(20, 60)):
    """Writer ids, series and labels: each writer writes every digit about equally often, as NIST's forms asked."""
    writer_ids, series, labels = [], [], []
    first = 0
    for each_series, count in zip((0, 4), writers_per_series):
        for writer in range(first, first + count):
            size = int(rng.integers(*digits_per_writer))
            writer_ids += [writer] * size
            series += [each_series] * size
            labels += rng.permutation(np.arange(size) % 10).tolist()
        first += count
    return np.array(writer_ids), np.array(series), np.array(labels)


def check_split(fit, validation, writer_ids, series, labels, share, tolerance):
    """Every digit on one side, no writer on both, `share` of each series (and of each class) in validation."""
    assert len(np.intersect1d(fit, validation)) == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([fit, validation])), np.arange(len(writer_ids)))
    assert not set(writer_ids[fit].tolist()) & set(writer_ids[validation].tolist())
    for each_series in np.unique(series):
        in_series = series == each_series
        assert np.isin(np.flatnonzero(in_series), validation).mean() == pytest.approx(share, abs=tolerance)
    class_share = np.bincount(labels[validation], minlength=10) / np.bincount(labels, minlength=10)
    assert np.abs(class_share - share).max() <= 0.02


def test_split_by_writer_keeps_writers_whole_and_series_at_their_share():
    writer_ids, series, labels = synthetic_writers(np.random.default_rng(0))
    for share in (0.2, 0.5):
        fit, validation = writers.split_by_writer(writer_ids, series, share, seed=3)
        # Whole writers of 20-60 digits: a series' share can miss by up to half a writer.
        check_split(fit, validation, writer_ids, series, labels, share, tolerance=0.03)


def test_split_by_writer_on_the_real_training_writers(real_writers):
    found, train_labels, _ = real_writers
    writer_ids, series = found["train"]["writer"], found["train"]["series"]
    fit, validation = writers.split_by_writer(writer_ids, series, 0.2, seed=0)
    # Measured: 19.9% of each series; every class between 19.6% and 20.1%.
    check_split(fit, validation, writer_ids, series, train_labels, 0.2, tolerance=0.005)


def test_split_by_writer_is_reproducible_and_the_seed_matters():
    writer_ids, series, _ = synthetic_writers(np.random.default_rng(1))
    first = writers.split_by_writer(writer_ids, series, 0.25, seed=7)
    again = writers.split_by_writer(writer_ids, series, 0.25, seed=7)
    other = writers.split_by_writer(writer_ids, series, 0.25, seed=8)
    for one, two in zip(first, again):
        np.testing.assert_array_equal(one, two)
    assert set(writer_ids[first[1]].tolist()) != set(writer_ids[other[1]].tolist())
    # Index arrays, sorted, as for indexing the images and labels.
    assert all(part.dtype.kind == "i" and np.all(np.diff(part) > 0) for part in first)


@pytest.mark.parametrize("share", [0.0, 1.0, -0.2, 1.5, 20, float("nan")])
def test_split_by_writer_refuses_a_share_out_of_range(share):
    writer_ids, series, _ = synthetic_writers(np.random.default_rng(2), (5, 5))
    with pytest.raises(ValueError, match="validation_split=.*use a fraction between 0 and 1"):
        writers.split_by_writer(writer_ids, series, share)


# ==================== Accuracy per writer ==============================================


def test_accuracy_by_writer_on_a_small_case():
    correct = np.array([True, False, True, True, True, False])
    writer_ids = np.array([7, 7, 3, 3, 3, 12])
    ids, counts, accuracy = writers.accuracy_by_writer(correct, writer_ids)
    np.testing.assert_array_equal(ids, [3, 7, 12])
    np.testing.assert_array_equal(counts, [3, 2, 1])
    np.testing.assert_allclose(accuracy, [1.0, 0.5, 0.0])
    # Weighted by their digits, the writers' accuracies give back the overall accuracy.
    assert np.sum(counts * accuracy) / counts.sum() == pytest.approx(correct.mean())


def test_writers_with_digits_needs_every_digit_often_enough():
    labels = np.concatenate([np.arange(10), np.arange(10), np.arange(10), np.arange(9)])
    writer_ids = np.repeat([1, 1, 2, 3], [10, 10, 10, 9])  # 1: each digit twice; 2: once; 3: no 9
    np.testing.assert_array_equal(writers.writers_with_digits(writer_ids, labels, 1), [1, 2])
    np.testing.assert_array_equal(writers.writers_with_digits(writer_ids, labels, 2), [1])
    assert len(writers.writers_with_digits(writer_ids, labels, 3)) == 0
    np.testing.assert_array_equal(writers.writers_with_digits(writer_ids, labels, 0), [1, 2, 3])
