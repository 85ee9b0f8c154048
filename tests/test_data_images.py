"""The image data layer: every source format, the hub fallback, splits, statistics and batches.

Nothing here reaches a network: hub tests run with offline mode on (or the reachability probe
patched) and an empty Hugging Face cache in tmp_path. Local tables are read by `datasets` into a
cache under tmp_path too.
"""
import gzip
import io
import json
import struct
import time

import numpy as np
import pytest

from numconv.data import (BatchIterator, HubUnavailable, ImageData, Split, batches,
                          load_image_files, load_images, load_images_or_fallback, preprocess)
from numconv.data import _hub, _transforms, images

Image = pytest.importorskip("PIL.Image")
datasets = pytest.importorskip("datasets")

SHARED_MNIST = "/work/shared/data/mnist"
DEBIAN_FASHION = "/usr/share/datasets/fashion-mnist"


@pytest.fixture(autouse=True)
def hf_sandbox(tmp_path, monkeypatch):
    """An empty Hugging Face home and cache, offline: no test can download or touch ~/.cache."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_home" / "datasets"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "hf_home"


# --------------------------------------------------------------------------------------- helpers

def write_idx(path, arr, gz):
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    data = header + arr.tobytes()
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(data)
    else:
        with open(path, "wb") as f:
            f.write(data)


def make_idx_dir(root, n_train=40, n_test=10, size=(7, 6), gz=True, seed=0):
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    xtr = rng.integers(0, 256, size=(n_train,) + size, dtype=np.uint8)
    ytr = np.arange(n_train) % 4
    xte = rng.integers(0, 256, size=(n_test,) + size, dtype=np.uint8)
    yte = np.arange(n_test) % 4
    write_idx(root / "train-images-idx3-ubyte", xtr, gz)
    write_idx(root / "train-labels-idx1-ubyte", ytr, gz)
    write_idx(root / "t10k-images-idx3-ubyte", xte, gz)
    write_idx(root / "t10k-labels-idx1-ubyte", yte, gz)
    return xtr, ytr, xte, yte


def png_bytes(arr, mode=None):
    buf = io.BytesIO()
    Image.fromarray(arr).convert(mode or ("L" if arr.ndim == 2 else "RGB")).save(buf, format="PNG")
    return buf.getvalue()


def save_png(path, arr, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(arr, mode))


def grey(value, size=(5, 6)):
    return np.full(size, value, dtype=np.uint8)


def make_folder(root, classes=("cat", "dog"), per_class=5, size=(5, 6)):
    for c, name in enumerate(classes):
        for i in range(per_class):
            save_png(root / name / f"{i:02d}.png", grey(40 * c + i, size))


def all_rows(split):
    return {(bytes(x.tobytes()), int(y)) for x, y in zip(split.x, split.y)}


# ---------------------------------------------------------------------------------- real datasets

def test_shared_mnist_idx():
    from pathlib import Path
    if not Path(SHARED_MNIST, "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"{SHARED_MNIST} is not on this machine")
    data = load_images(SHARED_MNIST, val_fraction=0.1, seed=0)
    assert data.train.x.dtype == np.uint8 and data.train.y.dtype == np.int64
    assert data.channels == 1 and data.image_size == (28, 28)
    assert len(data.train) + len(data.val) == 60000 and len(data.test) == 10000
    assert abs(len(data.val) - 6000) <= 10
    assert np.bincount(data.test.y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert data.classes == [str(i) for i in range(10)]
    assert data.source.endswith("(IDX)") and data.name == "mnist"
    # the well-known MNIST statistics (of the whole training set; ours excludes the 10% val)
    assert abs(float(data.mean[0]) - 0.1307) < 2e-3 and abs(float(data.std[0]) - 0.3081) < 2e-3


def test_debian_fashion_mnist_names_its_classes():
    from pathlib import Path
    if not Path(DEBIAN_FASHION).is_dir():
        pytest.skip("not installed: apt-get install -y dataset-fashion-mnist")
    data = load_images(DEBIAN_FASHION, max_examples=500)
    assert data.classes[0] == "T-shirt/top" and data.classes[9] == "Ankle boot"
    assert data.image_size == (28, 28) and len(data.test) == 500


def test_digits_scaled_and_split_seeded():
    data = load_images("digits", val_fraction=0.1, seed=3)
    assert data.image_size == (8, 8) and data.channels == 1
    assert data.train.x.dtype == np.uint8 and data.train.x.max() == 255
    total = len(data.train) + len(data.val) + len(data.test)
    assert total == 1797
    assert abs(len(data.test) - 0.2 * 1797) <= 10           # carved test split
    assert abs(len(data.val) - 0.1 * 0.8 * 1797) <= 10
    assert set(np.unique(data.test.y)) == set(range(10))     # stratified
    assert data.source == "sklearn:load_digits"
    again = load_images("digits", val_fraction=0.1, seed=3)
    np.testing.assert_array_equal(again.test.x, data.test.x)
    other = load_images("digits", val_fraction=0.1, seed=4)
    assert not np.array_equal(other.test.y, data.test.y)
    big = load_images("digits", mode="RGB", image_size=16, max_examples=100)
    assert big.image_size == (16, 16) and big.channels == 3 and big.mean.shape == (3,)
    assert len(big.train) + len(big.val) + len(big.test) == 100


# ---------------------------------------------------------------------------------------- IDX

@pytest.mark.parametrize("gz", [True, False])
def test_idx_files_gz_and_plain(tmp_path, gz):
    xtr, ytr, xte, yte = make_idx_dir(tmp_path / "idx", gz=gz)
    data = load_images(tmp_path / "idx", val_fraction=0.25, seed=0)
    np.testing.assert_array_equal(data.test.x[:, 0], xte)
    np.testing.assert_array_equal(data.test.y, yte)
    assert len(data.train) == 30 and len(data.val) == 10
    assert sorted(np.bincount(data.val.y)) == [2, 2, 3, 3]    # round(0.25 * 10 or 0.25 * 10)
    merged = np.concatenate([data.train.x, data.val.x])[:, 0]
    assert sorted(map(bytes, merged)) == sorted(map(bytes, xtr))
    assert data.classes == ["0", "1", "2", "3"]


def test_idx_errors(tmp_path):
    make_idx_dir(tmp_path / "a", gz=False)
    (tmp_path / "a" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte"):
        load_images(tmp_path / "a")
    make_idx_dir(tmp_path / "b", gz=False)
    (tmp_path / "b" / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 8)
    with pytest.raises(ValueError, match="truncated"):
        load_images(tmp_path / "b")
    make_idx_dir(tmp_path / "c", gz=False)
    (tmp_path / "c" / "train-labels-idx1-ubyte").write_bytes(b"PK\x03\x04 not idx")
    with pytest.raises(ValueError, match="not an IDX file"):
        load_images(tmp_path / "c")
    with pytest.raises(ValueError, match="one IDX file"):
        load_images(tmp_path / "c" / "train-images-idx3-ubyte")


# -------------------------------------------------------------------------------- image folders

def test_image_folder_flat(tmp_path):
    make_folder(tmp_path / "pets", per_class=10)
    (tmp_path / "pets" / "cat" / "notes.txt").write_text("not an image")
    calls = []
    data = load_images(tmp_path / "pets", val_fraction=0.25, test_fraction=0.2, seed=1,
                       progress=lambda stage, done, total: calls.append((done, total)))
    assert calls[-1] == (20, 20)
    assert data.classes == ["cat", "dog"] and data.image_size == (5, 6) and data.channels == 1
    assert len(data.train) + len(data.val) + len(data.test) == 20
    assert len(data.test) == 4 and len(data.val) == 4       # 2 per class each
    assert any("test split" in n for n in data.notes)
    # pixels kept exactly: class 1's images are 40..49
    assert set(np.unique(data.train.x[data.train.y == 1])) <= set(range(40, 50))


def test_image_folder_train_test_rgb(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 2)):
        for c in ("a", "b", "c"):
            for i in range(n):
                save_png(tmp_path / "ds" / split / c / f"{i}.png",
                         rng.integers(0, 256, (4, 4, 3), dtype=np.uint8))
    data = load_images(tmp_path / "ds", val_fraction=1 / 3)
    assert data.channels == 3 and len(data.test) == 6 and len(data.val) == 6
    assert data.classes == ["a", "b", "c"] and data.mean.shape == (3,)
    assert not any("test split" in n for n in data.notes)


def test_image_folder_mixed_sizes_and_modes(tmp_path):
    make_folder(tmp_path / "sizes", per_class=2)
    save_png(tmp_path / "sizes" / "dog" / "big.png", grey(9, (8, 8)))
    with pytest.raises(ValueError, match=r"mixes image sizes.*big\.png.*image_size="):
        load_images(tmp_path / "sizes")
    fixed = load_images(tmp_path / "sizes", image_size=(5, 6))
    assert fixed.image_size == (5, 6)

    make_folder(tmp_path / "modes", per_class=2)
    save_png(tmp_path / "modes" / "cat" / "colour.png", np.zeros((5, 6, 3), np.uint8))
    with pytest.raises(ValueError, match=r"mixes image modes.*colour\.png.*mode="):
        load_images(tmp_path / "modes")
    assert load_images(tmp_path / "modes", mode="RGB").channels == 3
    assert load_images(tmp_path / "modes", mode="L").channels == 1


def test_image_files_and_missing_pillow(tmp_path, monkeypatch):
    make_folder(tmp_path / "pets", per_class=2)
    files = sorted((tmp_path / "pets").rglob("*.png"))
    x = load_image_files(files)
    assert x.shape == (4, 1, 5, 6) and x.dtype == np.uint8 and x[2, 0, 0, 0] == 40
    assert load_image_files(files, mode="RGB", image_size=8).shape == (4, 3, 8, 8)
    monkeypatch.setattr(_transforms, "pillow", lambda: None)
    with pytest.raises(ImportError, match="pip install pillow"):
        load_images(tmp_path / "pets")


def test_image_folder_empty_and_loose(tmp_path):
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    with pytest.raises(ValueError, match="empty"):
        load_images(tmp_path / "empty")
    save_png(tmp_path / "loose" / "x.png", grey(1))
    with pytest.raises(ValueError, match="no class sub-folders"):
        load_images(tmp_path / "loose")


# ------------------------------------------------------------------------------------- tables

def make_parquet(path, n=12, label_kind="str", size=(5, 6), column="image", rows=None):
    import pyarrow as pa
    import pyarrow.parquet as pq
    names = ["zebra", "ant", "moth"]
    rows = rows if rows is not None else [
        ({"bytes": png_bytes(grey(10 * i, size)), "path": None},
         names[i % 3] if label_kind == "str" else i % 3) for i in range(n)]
    pq.write_table(pa.table({column: [r[0] for r in rows], "label": [r[1] for r in rows]}), path)


def test_parquet_image_bytes_string_labels(tmp_path):
    make_parquet(tmp_path / "pics.parquet", n=24)
    data = load_images(tmp_path / "pics.parquet", val_fraction=0.2, seed=0)
    assert data.classes == ["ant", "moth", "zebra"]          # sorted class ids
    assert data.image_size == (5, 6) and data.train.x.dtype == np.uint8
    assert len(data.train) + len(data.val) + len(data.test) == 24
    # row i holds value 10*i and label names[i % 3]: check the mapping on every split
    for split in (data.train, data.val, data.test):
        i = split.x[:, 0, 0, 0] // 10
        want = np.array([["zebra", "ant", "moth"][k % 3] for k in i])
        assert [data.classes[c] for c in split.y] == list(want)


def test_parquet_directory_with_splits_and_hf_features(tmp_path):
    feats = datasets.Features({"img": datasets.Image(),
                               "label": datasets.ClassLabel(names=["no", "yes"])})
    for split, n in (("train", 8), ("test", 4)):
        ds = datasets.Dataset.from_dict(
            {"img": [Image.fromarray(grey(i)) for i in range(n)], "label": [i % 2 for i in range(n)]},
            features=feats)
        (tmp_path / "hub" / "data").mkdir(parents=True, exist_ok=True)
        ds.to_parquet(str(tmp_path / "hub" / "data" / f"{split}-00000-of-00001.parquet"))
    data = load_images(tmp_path / "hub", val_fraction=0.25)
    assert data.classes == ["no", "yes"] and len(data.test) == 4 and len(data.val) == 2
    assert data.source.endswith("(parquet)")


def test_csv_paths_and_pixel_columns_and_jsonl(tmp_path):
    for i in range(6):
        save_png(tmp_path / "csv" / "img" / f"{i}.png", grey(i))
    (tmp_path / "csv" / "train.csv").write_text(
        "file_name,label\n" + "".join(f"img/{i}.png,{i % 2}\n" for i in range(6)))
    data = load_images(tmp_path / "csv", test_fraction=0.34, val_fraction=0.0)
    assert data.image_size == (5, 6) and len(data.val) == 0 and len(data.test) == 2

    header = "label," + ",".join(f"pixel{i}" for i in range(16))
    lines = [f"{i % 2}," + ",".join(str((i * 16 + p) % 256) for p in range(16)) for i in range(8)]
    (tmp_path / "wide.csv").write_text("\n".join([header] + lines) + "\n")
    wide = load_images(tmp_path / "wide.csv", val_fraction=0.0, test_fraction=0.25)
    assert wide.image_size == (4, 4)
    row = np.concatenate([wide.train.x, wide.test.x])[:, 0].reshape(-1, 16)
    assert any((r == np.arange(16) + 16).all() for r in row)

    import json
    with open(tmp_path / "arr.jsonl", "w") as f:
        for i in range(6):
            f.write(json.dumps({"pixels": (np.eye(3) * i).tolist(), "target": i % 3}) + "\n")
    with pytest.raises(ValueError, match=r"no image column \(its columns: pixels, target\)"):
        load_images(tmp_path / "arr.jsonl")
    arr = load_images(tmp_path / "arr.jsonl", image_column="pixels", val_fraction=0.0,
                      test_fraction=0.5)
    assert arr.image_size == (3, 3) and arr.train.x.dtype == np.float32   # float source stays float


def test_table_errors(tmp_path):
    make_parquet(tmp_path / "cols.parquet", column="picture_data")
    with pytest.raises(ValueError, match=r"no image column \(its columns: picture_data, label\).*"
                                         r"image_column="):
        load_images(tmp_path / "cols.parquet")
    assert load_images(tmp_path / "cols.parquet", image_column="picture_data").image_size == (5, 6)
    with pytest.raises(ValueError, match=r"no column 'tag' \(its columns: picture_data, label\)"):
        load_images(tmp_path / "cols.parquet", image_column="picture_data", label_column="tag")

    make_parquet(tmp_path / "ints.parquet", label_kind="int")
    with pytest.raises(ValueError, match=r"label 2 at row 2 .* out of range for 2 classes"):
        load_images(tmp_path / "ints.parquet", classes=["a", "b"])
    rows = [({"bytes": png_bytes(grey(i)), "path": None}, i - 1) for i in range(4)]
    make_parquet(tmp_path / "neg.parquet", rows=rows)
    with pytest.raises(ValueError, match=r"label -1 at row 0 .* negative"):
        load_images(tmp_path / "neg.parquet")

    rows = [({"bytes": png_bytes(grey(i, (5, 6) if i != 3 else (7, 7))), "path": None}, 0)
            for i in range(5)]
    make_parquet(tmp_path / "sizes.parquet", rows=rows)
    with pytest.raises(ValueError, match=r"mixes image sizes: greyscale 5x6 \(e\.g\. row 0 .*"
                                         r"greyscale 7x7 \(e\.g\. row 3"):
        load_images(tmp_path / "sizes.parquet")

    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"image": pa.array([], pa.binary()), "label": pa.array([], pa.int64())}),
                   tmp_path / "zero.parquet")
    with pytest.raises(ValueError, match=r"zero\.parquet' is empty \(no rows"):
        load_images(tmp_path / "zero.parquet")
    save_png(tmp_path / "a.png", grey(1))
    save_png(tmp_path / "b.png", grey(2))
    (tmp_path / "gaps.csv").write_text("image_path,label\na.png,0\nb.png,\n")
    with pytest.raises(ValueError, match=r"row 1 of .* has no label"):
        load_images(tmp_path / "gaps.csv")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match=r"not a supported format \(\.txt\)"):
        load_images(tmp_path / "notes.txt")


def test_names_and_paths_errors(tmp_path):
    with pytest.raises(ValueError, match=r"unknown dataset name 'mnsit'.*mnist, fashion_mnist, "
                                         r"cifar10, imagenette, tiny-imagenet, digits"):
        load_images("mnsit")
    with pytest.raises(ValueError, match=r"path '.*nowhere' does not exist"):
        load_images(str(tmp_path / "nowhere"))
    (tmp_path / "void").mkdir()
    with pytest.raises(ValueError, match="holds no dataset"):
        load_images(tmp_path / "void")
    with pytest.raises(ValueError, match="val_fraction=1.5"):
        load_images("digits", val_fraction=1.5)
    with pytest.raises(ValueError, match="mode='RGBA'"):
        load_images("digits", mode="RGBA")


# ---------------------------------------------------------------------------------------- hub

def test_hub_offline_fails_fast_and_falls_back(hf_sandbox):
    start = time.monotonic()
    with pytest.raises(HubUnavailable) as err:
        load_images("mnist")
    assert err.value.name == "mnist" and err.value.cause == "offline"
    assert "not in the cache" in err.value.reason and str(hf_sandbox) in err.value.reason
    data, note = load_images_or_fallback("mnist", seed=0)
    assert time.monotonic() - start < 10
    assert note == ("Hugging Face offline mode is on and mnist is not cached: training on "
                    "scikit-learn's 8x8 digits instead")
    assert data.name == "digits" and data.image_size == (8, 8)
    assert data.fallback_reason.startswith("mnist: ")
    assert not any("mnist" in line for line in data.notes)    # the note is the one line
    assert load_images_or_fallback("digits")[1] is None


def test_hub_unreachable_fails_fast_and_falls_back(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    probes = []
    monkeypatch.setattr(_hub, "hub_reachable", lambda timeout=0: probes.append(1) or
                        (False, "cannot connect to huggingface.co:443: test"))
    start = time.monotonic()
    data, note = load_images_or_fallback("cifar10", streaming=True)
    assert time.monotonic() - start < 10 and probes == [1]
    assert note == ("the Hugging Face hub is unreachable and cifar10 is not cached: training on "
                    "scikit-learn's 8x8 digits instead")
    import huggingface_hub.constants
    before = (datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE)
    with pytest.raises(HubUnavailable, match="imagenette") as err:
        load_images("imagenette", hub_offline=True)
    assert err.value.cause == "offline"
    assert (datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE) == before


def test_hub_online_paths_mocked(monkeypatch):
    """With the hub reachable (mocked), load_dataset's answers map to the right outcome."""
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(_hub, "hub_reachable", lambda timeout=0: (True, ""))
    seen = []

    def script_repo(path, name=None, **kw):
        seen.append((path, name, kw["revision"], kw["streaming"], datasets.config.HF_HUB_OFFLINE))
        if kw["revision"] is None:
            raise RuntimeError("Dataset scripts are no longer supported, but found imagenette.py")
        return fake_mnist(sizes=(6, 6))

    monkeypatch.setattr(datasets, "load_dataset", script_repo)
    monkeypatch.setitem(images.DATASETS, "imagenette",
                        images.HubSpec("frgfm/imagenette", "160px", mode="RGB", image_size=6))
    data = load_images("imagenette", streaming=True)
    assert [s[2] for s in seen] == [None, "refs/convert/parquet"]
    assert seen[0][:2] == ("frgfm/imagenette", "160px") and seen[0][3] is True and seen[0][4] is False
    assert data.image_size == (6, 6)

    from datasets.exceptions import DatasetNotFoundError

    def missing(*a, **kw):
        raise DatasetNotFoundError("Dataset 'nobody/nothing' doesn't exist on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", missing)
    with pytest.raises(ValueError, match="the hub has no dataset 'nobody/nothing'"):
        load_images("hf:nobody/nothing")

    def cut(*a, **kw):
        raise ConnectionError("Couldn't reach 'ylecun/mnist' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", cut)
    with pytest.raises(HubUnavailable) as err:
        load_images("mnist")
    assert err.value.cause == "unreachable"


def test_hub_probe_reports_failure(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")     # discard port: refused at once
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    ok, why = _hub.hub_reachable(timeout=2)
    assert not ok and "127.0.0.1:9" in why


def fake_mnist(n_train=20, n_test=6, streaming=False, sizes=None):
    feats = datasets.Features({"image": datasets.Image(),
                               "label": datasets.ClassLabel(names=[f"d{i}" for i in range(3)])})

    def split(n):
        size = sizes or (4, 4)
        ds = datasets.Dataset.from_dict(
            {"image": [Image.fromarray(grey(i, size if i % 2 else (size[0] + 2, size[1] + 4)))
                       if sizes else Image.fromarray(grey(i, size)) for i in range(n)],
             "label": [i % 3 for i in range(n)]}, features=feats)
        return ds.to_iterable_dataset() if streaming else ds

    dd_type = datasets.IterableDatasetDict if streaming else datasets.DatasetDict
    return dd_type({"train": split(n_train), "test": split(n_test)})


@pytest.mark.parametrize("streaming", [False, True])
def test_hub_dataset_conversion(monkeypatch, streaming):
    calls = []

    def fake_load(name, spec, *, streaming, hub_offline):
        calls.append((name, spec.repo, streaming))
        return fake_mnist(streaming=streaming)

    monkeypatch.setattr(images, "load_hub_dataset", fake_load)
    data = load_images("mnist", streaming=streaming, val_fraction=0.3)
    assert calls == [("mnist", "ylecun/mnist", streaming)]
    assert data.name == "mnist" and data.source == "hf:ylecun/mnist"
    assert data.classes == ["d0", "d1", "d2"] and len(data.test) == 6 and len(data.val) == 6
    np.testing.assert_array_equal(data.test.x[:, 0, 0, 0], np.arange(6))


def test_hub_spec_resizes_mixed_sizes(monkeypatch):
    monkeypatch.setattr(images, "load_hub_dataset",
                        lambda name, spec, **kw: fake_mnist(sizes=(6, 6)))
    monkeypatch.setitem(images.DATASETS, "imagenette",
                        images.HubSpec("frgfm/imagenette", "160px", mode="RGB", image_size=6))
    data = load_images("imagenette")
    assert data.image_size == (6, 6) and data.channels == 3
    assert data.source == "hf:frgfm/imagenette:160px"


# -------------------------------------------------------------------------- statistics, batches

def test_stats_from_train_only(tmp_path):
    root = tmp_path / "idx"
    root.mkdir()
    x = np.repeat(np.arange(40, dtype=np.uint8)[:, None, None], 3, 1).repeat(3, 2)
    write_idx(root / "train-images-idx3-ubyte", x, gz=False)
    write_idx(root / "train-labels-idx1-ubyte", np.arange(40) % 2, gz=False)
    write_idx(root / "t10k-images-idx3-ubyte", np.full((5, 3, 3), 250, np.uint8), gz=False)
    write_idx(root / "t10k-labels-idx1-ubyte", np.arange(5) % 2, gz=False)
    data = load_images(root, val_fraction=0.25)
    train = data.train.x.astype(np.float64) / 255
    assert abs(float(data.mean[0]) - train.mean()) < 1e-6
    assert abs(float(data.std[0]) - train.std()) < 1e-6
    everything = np.concatenate([data.train.x, data.val.x]).astype(np.float64) / 255
    assert abs(float(data.mean[0]) - everything.mean()) > 1e-4   # val is left out too


def test_pad_28_to_32_keeps_image_centred():
    x = np.zeros((1, 1, 28, 28), np.uint8)
    x[0, 0, 0, 0], x[0, 0, 27, 27], x[0, 0, 10:14, 12:16] = 255, 200, 100
    mean, std = np.array([0.1], np.float32), np.array([0.3], np.float32)
    (xb, yb), = list(batches((x, np.array([7])), 4, input_size=(32, 32), mean=mean, std=std))
    assert xb.shape == (1, 1, 32, 32) and xb.dtype == np.float32 and yb.tolist() == [7]
    raw = xb[0, 0] * 0.3 + 0.1
    np.testing.assert_allclose(raw[2:30, 2:30], x[0, 0] / 255, atol=1e-6)
    np.testing.assert_allclose(raw[:2], 0, atol=1e-6)
    np.testing.assert_allclose(raw[:, 30:], 0, atol=1e-6)
    assert raw[2, 2] == pytest.approx(1) and raw[29, 29] == pytest.approx(200 / 255)


def test_resize_with_and_without_pillow(monkeypatch):
    x = np.arange(2 * 64, dtype=np.uint8).reshape(2, 1, 8, 8) * 2
    (xb, _), = list(batches((x, np.array([0, 1])), 2, input_size=32))
    assert xb.shape == (2, 1, 32, 32)
    assert xb.min() >= 0 and xb.max() <= 1 and np.isclose(xb[1].mean(), (x[1] / 255).mean(), atol=0.02)
    monkeypatch.setattr(_transforms, "pillow", lambda: None)
    (xn, _), = list(batches((x, np.array([0, 1])), 2, input_size=32))
    assert xn.shape == (2, 1, 32, 32)
    assert set(np.round(xn.ravel() * 255).astype(int)) <= set(x.ravel().astype(int))   # nearest
    np.testing.assert_allclose(xn[0, 0, :4, :4], x[0, 0, 0, 0] / 255)


def test_augmentation_deterministic_and_correct():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (50, 3, 8, 8), dtype=np.uint8)
    y = np.arange(50) % 5
    kw = dict(shuffle=True, crop_padding=2, flip=True)

    def epoch(seed):
        it = batches(Split(x, y), 16, rng=np.random.default_rng(seed), **kw)
        return [b for b in it]

    a, b, c = epoch(7), epoch(7), epoch(8)
    for (xa, ya), (xb_, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb_)
        np.testing.assert_array_equal(ya, yb)
    assert not all(np.array_equal(p[0], q[0]) for p, q in zip(a, c))
    assert sorted(np.concatenate([yy for _, yy in a]).tolist()) == sorted(y.tolist())
    # every augmented image is a shifted (and maybe mirrored) window of its padded original
    src = np.pad(x / 255, ((0, 0), (0, 0), (2, 2), (2, 2))).astype(np.float32)
    it = BatchIterator(Split(x, np.arange(50)), 50, rng=np.random.default_rng(1), **kw)
    (xa, order), = list(it)
    for img, i in zip(xa, order):
        windows = [src[i, :, dy:dy + 8, dx:dx + 8] for dy in range(5) for dx in range(5)]
        assert any(np.allclose(img, w) or np.allclose(img, w[:, :, ::-1]) for w in windows)


def test_channels_len_and_preprocess():
    x = np.random.default_rng(0).integers(0, 256, (10, 1, 4, 4), dtype=np.uint8)
    y = np.zeros(10, np.int64)
    it = batches((x, y), 4, channels=3, mean=[0.5], std=[0.25])
    assert len(it) == 3 and len(batches((x, y), 4, drop_last=True)) == 2
    xb, _ = next(iter(it))
    assert xb.shape == (4, 3, 4, 4)
    np.testing.assert_array_equal(xb[:, 0], xb[:, 2])
    np.testing.assert_allclose(xb[:, 0], (x[:4, 0] / 255 - 0.5) / 0.25, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(preprocess(x[:4], channels=3, mean=[0.5], std=[0.25]), xb)
    rgb = np.stack([x[:, 0], x[:, 0] // 2, np.zeros_like(x[:, 0])], 1)
    g, _ = next(iter(batches((rgb, y), 10, channels=1)))
    np.testing.assert_allclose(g[:, 0], (x[:, 0] / 255 + (x[:, 0] // 2) / 255) / 3, atol=1e-6)
    with pytest.raises(ValueError, match="3-channel images to 2 channels"):
        next(iter(batches((rgb, y), 10, channels=2)))
    with pytest.raises(ValueError, match="mean has 2 values for 1-channel"):
        batches((x, y), 4, mean=[0.1, 0.2], std=[1, 1])
    with pytest.raises(ValueError, match="rng="):
        batches((x, y), 4, shuffle=True)


def test_imagedata_info_is_json_ready():
    import json
    data = load_images("digits", max_examples=200)
    assert isinstance(data, ImageData)
    info = json.loads(json.dumps(data.info()))
    assert info["image_size"] == [8, 8] and sum(info["sizes"].values()) == 200


def test_train_image_with_no_options_falls_back_in_one_line(hf_sandbox, tmp_path, monkeypatch):
    """`numconv train-image` as the README's first command runs it (the hub offline, nothing
    cached): one line says why and names the embedded dataset it trains LeNet-5 on instead."""
    from click.testing import CliRunner

    from cli.main import main
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["train-image", "--epochs", "1", "--limit", "128"])
    assert result.exit_code == 0, result.output
    words = " ".join(result.output.split())               # (the console wraps long lines)
    note = ("Hugging Face offline mode is on and mnist is not cached: training on "
            "scikit-learn's 8x8 digits instead")
    assert words.count(note) == 1 and words.count("mnist") == 1, result.output
    assert "trained lenet5 on sklearn:load_digits" in words
    doc = json.loads((tmp_path / "runs" / "latest" / "config.json").read_text())
    assert doc["dataset_name"] == "digits" and doc["fallback_reason"].startswith("mnist: ")
