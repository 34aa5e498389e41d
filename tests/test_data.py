"""The MNIST loader on real IDX bytes, and each kind of bad file giving its clear error."""

import gzip
import struct

import numpy as np
import pytest

import helpers


def write_idx(path, array, magic_type=0x08, compress=False):
    """Write `array` as an IDX file the way the MNIST files are laid out."""
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, magic_type, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def copy_mnist(source, target, names=None):
    """Copy the real MNIST files (all, or those named) into `target`."""
    target.mkdir(exist_ok=True)
    for stem in names or helpers.MNIST_FILES.values():
        (target / f"{stem}.gz").write_bytes((source / f"{stem}.gz").read_bytes())
    return target


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_round_trip(tmp_path, compress):
    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    path = write_idx(tmp_path / ("images.gz" if compress else "images"), images, compress=compress)
    np.testing.assert_array_equal(helpers.read_idx(path), images)


def test_load_real_mnist(mnist_dir):
    (x_train, y_train), (x_test, y_test) = helpers.load_mnist(mnist_dir)
    assert x_train.shape == (60000, 28, 28) and x_train.dtype == np.uint8
    assert y_train.shape == (60000,) and y_test.shape == (10000,)
    assert x_test.shape == (10000, 28, 28)
    # The first training labels of MNIST are well known: 5 0 4 1 9 2 1 3 1 4.
    assert y_train[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert x_train.max() == 255 and set(np.unique(y_test)) == set(range(10))


def test_mnist_dir_environment_variable(mnist_dir, monkeypatch):
    monkeypatch.setenv("MNIST_DIR", str(mnist_dir))
    (_, y_train), _ = helpers.load_mnist()
    assert len(y_train) == 60000


def test_raw_idx_files_are_read_too(mnist_dir, tmp_path):
    for stem in helpers.MNIST_FILES.values():
        (tmp_path / stem).write_bytes(gzip.decompress((mnist_dir / f"{stem}.gz").read_bytes()))
    (_, _), (x_test, _) = helpers.load_mnist(tmp_path)
    assert x_test.shape == (10000, 28, 28)


def test_npz_loading(mnist_dir, tmp_path):
    (x_train, y_train), (x_test, y_test) = helpers.load_mnist(mnist_dir)
    np.savez(tmp_path / "mnist.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    (npz_train, npz_train_labels), (npz_test, _) = helpers.load_mnist(tmp_path)
    np.testing.assert_array_equal(npz_train[:100], x_train[:100])
    np.testing.assert_array_equal(npz_train_labels, y_train)
    assert npz_test.shape == (10000, 28, 28)
    # A path straight to the .npz file works as well.
    (_, labels), _ = helpers.load_mnist(tmp_path / "mnist.npz")
    assert len(labels) == 60000


def test_npz_with_pickled_objects_is_refused(tmp_path):
    path = tmp_path / "mnist.npz"
    np.savez(path, x_train=np.array([{"evil": 1}], dtype=object), y_train=np.zeros(1),
             x_test=np.zeros(1), y_test=np.zeros(1))
    with pytest.raises(ValueError, match="pickle|Object arrays"):
        helpers.load_mnist(path)


def test_npz_missing_arrays(tmp_path):
    np.savez(tmp_path / "mnist.npz", x_train=np.zeros((1, 28, 28), np.uint8))
    with pytest.raises(ValueError, match=r"mnist\.npz: missing arrays"):
        helpers.load_mnist(tmp_path)


def test_missing_folder_says_how_to_set_mnist_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="MNIST_DIR") as error:
        helpers.load_mnist(tmp_path / "nowhere")
    assert "nowhere" in str(error.value)


def test_missing_file_is_named(mnist_dir, tmp_path):
    copy_mnist(mnist_dir, tmp_path, ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte"])
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        helpers.load_mnist(tmp_path)


def test_truncated_gzip_is_named(mnist_dir, tmp_path):
    copy_mnist(mnist_dir, tmp_path)
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match="train-labels-idx1-ubyte.gz.*truncated"):
        helpers.load_mnist(tmp_path)


def test_truncated_data_is_named(mnist_dir, tmp_path):
    copy_mnist(mnist_dir, tmp_path)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:-784]))
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte.gz.*7840000 bytes.*7839216.*truncated"):
        helpers.load_mnist(tmp_path)


def test_not_gzip_is_named(mnist_dir, tmp_path):
    copy_mnist(mnist_dir, tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_text("<html>404 Not Found</html>")
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.gz.*not gzip"):
        helpers.load_mnist(tmp_path)


def test_bad_magic_number_is_named(tmp_path):
    path = tmp_path / "labels"
    path.write_bytes(struct.pack(">II", 0x12345678, 3) + b"\x01\x02\x03")
    with pytest.raises(ValueError, match=r"labels: bad magic number 0x12345678"):
        helpers.read_idx(path)


def test_labels_out_of_range(mnist_dir, tmp_path):
    copy_mnist(mnist_dir, tmp_path)
    labels = helpers.read_idx(mnist_dir / "t10k-labels-idx1-ubyte.gz").copy()
    labels[5] = 11
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels, compress=True)
    with pytest.raises(ValueError, match="labels go up to 11"):
        helpers.load_mnist(tmp_path)


def test_image_and_label_counts_must_agree(mnist_dir, tmp_path):
    copy_mnist(mnist_dir, tmp_path)
    labels = helpers.read_idx(mnist_dir / "t10k-labels-idx1-ubyte.gz")
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels[:9999], compress=True)
    with pytest.raises(ValueError, match="10000 test images but 9999 test labels"):
        helpers.load_mnist(tmp_path)


def test_swapped_files_are_detected(mnist_dir, tmp_path):
    copy_mnist(mnist_dir, tmp_path)
    images = tmp_path / "t10k-images-idx3-ubyte.gz"
    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    image_bytes, label_bytes = images.read_bytes(), labels.read_bytes()
    images.write_bytes(label_bytes)
    labels.write_bytes(image_bytes)
    with pytest.raises(ValueError, match="swapped"):
        helpers.load_mnist(tmp_path)


def test_failed_download_says_how_to_set_mnist_dir(monkeypatch):
    import keras

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.delenv("MNIST_DIR", raising=False)
    monkeypatch.setattr(keras.datasets.mnist, "load_data", offline)
    with pytest.raises(RuntimeError, match="download failed.*network is unreachable.*MNIST_DIR"):
        helpers.load_mnist()


def test_model_input_is_float32_in_unit_range():
    images = np.array([[[0, 255], [128, 64]]], dtype=np.uint8)
    inputs = helpers.to_model_input(images)
    assert inputs.dtype == np.float32 and inputs.shape == (1, 2, 2, 1)
    assert inputs.min() == 0.0 and inputs.max() == 1.0


def test_split_validation_takes_the_last_fraction():
    images, labels = np.arange(10), np.arange(10) * 2
    (train_x, train_y), (val_x, val_y) = helpers.split_validation(images, labels, 0.2)
    assert train_x.tolist() == list(range(8)) and val_x.tolist() == [8, 9]
    assert val_y.tolist() == [16, 18]
    with pytest.raises(ValueError, match="validation_split=1.5"):
        helpers.split_validation(images, labels, 1.5)
