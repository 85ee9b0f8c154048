"""The image data layer of `numconv train-image`: datasets in, normalised NumPy batches out.

    from numconv.data import load_images_or_fallback, batches
    data, note = load_images_or_fallback("mnist", val_fraction=0.1, seed=0)
    rng = np.random.default_rng(0)
    for x, y in batches(data.train, 64, shuffle=True, rng=rng, input_size=(32, 32),
                        mean=data.mean, std=data.std):
        ...   # x float32 (64, 1, 32, 32), y int64 (64,)

`load_images` reads a dataset named in `DATASETS` (from the Hugging Face hub, or scikit-learn's
bundled 8x8 digits) or a local path: a folder of IDX files (MNIST's format), an image folder with
one sub-folder per class (optionally under train/ and test/ or val/), or parquet / arrow / csv /
jsonl files with an image column and a label column (read with Hugging Face `datasets`), or a
folder written by `datasets`' `save_to_disk`.

The test split is never touched by training: it is the source's test split, else its validation
split, else a seeded stratified `test_fraction` of the training data. The validation split is the
source's own when it also has a test split, else a seeded stratified `val_fraction` of the training
data. Normalisation statistics come from the training split alone.

Nothing here prints: loading reports through the optional `progress(stage, done, total)` callback.
"""
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional

import numpy as np

from numconv.data import _image_io, _transforms
from numconv.data._hub import (HubSpec, HubUnavailable, datasets_cache_dir, load_hub_dataset,
                               local_mode)

__all__ = ["DATASETS", "DEFAULT_DATASET", "FALLBACK_DATASET", "HubUnavailable", "Split",
           "ImageData", "load_images", "load_images_or_fallback", "load_image_files",
           "BatchIterator", "batches", "preprocess"]

# Named datasets. Hub entries give the repository, its config, and a mode / size that every image is
# converted to where the dataset mixes them (Imagenette's sizes vary, Tiny ImageNet has some
# greyscale images).
DATASETS = {
    "mnist": HubSpec("ylecun/mnist"),
    "fashion_mnist": HubSpec("zalando-datasets/fashion_mnist"),
    "cifar10": HubSpec("uoft-cs/cifar10"),
    "imagenette": HubSpec("frgfm/imagenette", "160px", mode="RGB", image_size=160),
    "tiny-imagenet": HubSpec("zh-plus/tiny-imagenet", mode="RGB"),
    "digits": None,  # scikit-learn's bundled 8x8 digits: offline
}
DEFAULT_DATASET = "mnist"
FALLBACK_DATASET = "digits"
DEFAULT_TEST_FRACTION = 0.2   # carved from the training data when a source has no held-out split

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot"]
IMAGE_COLUMN_NAMES = ("image", "img", "images", "pixel_values", "picture", "photo", "file_name",
                      "filename", "image_path", "path", "file")
LABEL_COLUMN_NAMES = ("label", "labels", "fine_label", "target", "class", "category", "y")
_PIXEL_COLUMN = re.compile(r"^(pixel|px|p)?_?\d+(x\d+)?$", re.IGNORECASE)
_TABLE_FORMATS = {".parquet": "parquet", ".arrow": "arrow", ".jsonl": "json", ".csv": "csv",
                  ".json": "json"}
_HF_SPLITS = {"train": "train", "test": "test", "validation": "validation", "valid": "validation",
              "val": "validation", "dev": "validation"}

Progress = Callable[[str, int, Optional[int]], None]


# ------------------------------------------------------------------------------------ data types

@dataclass
class Split:
    """One split: `x` (N, C, H, W) uint8 (float32 where the source holds floats), `y` (N,) int64."""
    x: np.ndarray
    y: np.ndarray

    def __len__(self):
        return len(self.y)


@dataclass
class ImageData:
    """A loaded dataset: three splits, class names, and the training split's per-channel statistics
    (`mean`, `std`: (C,) float32 in 0..1 units, i.e. of x / 255 for uint8 images).

    `name` is the dataset's short name ('mnist', 'digits', a folder's name); `source` says what was
    read ('hf:ylecun/mnist', 'sklearn:load_digits', or an absolute path and its format); `notes`
    are one-line remarks on how the splits were made, for the run's output; `fallback_reason`, for
    the digits loaded in place of a hub dataset, why that one could not be (for the record)."""
    train: Split
    val: Split
    test: Split
    classes: List[str]
    name: str
    source: str
    mean: np.ndarray
    std: np.ndarray
    notes: List[str] = field(default_factory=list)
    fallback_reason: str = None

    @property
    def channels(self):
        return self.train.x.shape[1]

    @property
    def image_size(self):
        """(H, W) of the stored images."""
        return tuple(self.train.x.shape[2:])

    @property
    def num_classes(self):
        return len(self.classes)

    def info(self):
        """A JSON-ready summary for the run's output and for reloading the same data."""
        return {"name": self.name, "source": self.source, "classes": list(self.classes),
                "channels": self.channels, "image_size": list(self.image_size),
                "dtype": self.train.x.dtype.name,
                "sizes": {"train": len(self.train), "val": len(self.val), "test": len(self.test)},
                "mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std],
                "notes": list(self.notes)}


@dataclass
class _Raw:
    """What a reader returns: {split: (x, labels)} with labels raw (ints or strings)."""
    splits: dict
    name: str
    source: str
    classes: Optional[List[str]] = None
    notes: List[str] = field(default_factory=list)
    where: dict = field(default_factory=dict)  # split -> how to name it in errors
    applied: bool = True  # mode, image_size and max_examples were applied while reading


# ----------------------------------------------------------------------------------- public API

def load_images(source, *, val_fraction=0.1, seed=0, streaming=None, hub_offline=None,
                test_fraction=DEFAULT_TEST_FRACTION, image_column=None, label_column=None,
                classes=None, mode=None, image_size=None, max_examples=None,
                progress: Optional[Progress] = None) -> ImageData:
    """Load an image classification dataset as uint8 (N, C, H, W) arrays with int64 labels.

    source: a name in DATASETS ('mnist', 'fashion_mnist', 'cifar10', 'imagenette', 'tiny-imagenet',
        'digits'), 'hf:owner/repo' or 'hf:owner/repo:config' for another hub dataset, or a path.
    val_fraction: share of the training data held out for validation (seeded, stratified) when the
        source has no validation split of its own; 0 gives an empty validation split.
    seed: seeds every split that is carved (and `max_examples` subsets).
    streaming: hub datasets only. True streams the rows instead of downloading the dataset into the
        Hugging Face cache; None or False download once and reuse the cache.
    hub_offline: True uses the Hugging Face cache only; False always tries the network; None (the
        default) follows HF_HUB_OFFLINE and otherwise checks within a few seconds that the hub can
        be reached, using the cache when it cannot. Raises HubUnavailable when it is not cached.
    test_fraction: share carved (seeded, stratified) as the test split when the source has no test
        or validation split ('digits', a single file, an image folder without train/test folders).
    image_column, label_column: the table columns to read, when they are not found by name
        ('image', 'img', ...; 'label', 'labels', ...) or type (Image, ClassLabel).
    classes: class names, in label order; integer labels must be below len(classes), string labels
        must be among them. Default: the source's names, the sorted string labels, or '0'..'K-1'.
    mode: 'L' or 'RGB' converts every image to greyscale or colour (needed when a source mixes them).
    image_size: N or (H, W) resizes every image (shorter side first, then a centre crop) as it is
        read (needed when a source mixes sizes).
    max_examples: keep at most this many examples per source split: a seeded random subset (the
        first ones when streaming).
    progress: called as progress(stage, done, total) while images are decoded.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction={val_fraction!r} is outside [0, 1); use e.g. 0.1")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction={test_fraction!r} is outside (0, 1); use e.g. 0.2")
    if max_examples is not None and int(max_examples) < 1:
        raise ValueError(f"max_examples={max_examples!r} must be a positive count, or None for all")
    _image_io.check_mode(mode)
    size = _check_size(image_size)
    opts = dict(image_column=image_column, label_column=label_column, mode=mode, size=size,
                max_examples=max_examples, seed=seed, progress=progress)

    name = _dataset_name(source)
    if name == "digits":
        raw = _read_digits()
    elif name is not None or str(source).startswith("hf:"):
        hub_name, spec = (name, DATASETS[name]) if name else _hf_spec(str(source))
        dd = load_hub_dataset(hub_name, spec, streaming=streaming, hub_offline=hub_offline)
        opts["mode"] = mode or spec.mode
        opts["size"] = size or _check_size(spec.image_size)
        raw = _read_hf_dict(dd, what=spec.repo, **opts)
        raw.name = hub_name
        raw.source = f"hf:{spec.repo}" + (f":{spec.config}" if spec.config else "")
    else:
        raw = _read_path(source, **opts)

    if not raw.applied:  # arrays read whole (digits, IDX)
        if max_examples is not None:
            raw.splits = _limit(raw.splits, max_examples, seed)
        raw.splits = {s: (_convert(x, mode, size), y) for s, (x, y) in raw.splits.items()}
    return _assemble(raw, classes=classes, val_fraction=val_fraction, test_fraction=test_fraction,
                     seed=seed)


def load_images_or_fallback(source=DEFAULT_DATASET, **kwargs):
    """`load_images(source, **kwargs)`, falling back to scikit-learn's 8x8 digits when `source` is a
    hub dataset that cannot be loaded (HubUnavailable). Returns (ImageData, note): `note` is None,
    or one line saying why the digits were loaded instead, e.g. "the Hugging Face hub is unreachable
    and mnist is not cached: training on scikit-learn's 8x8 digits instead".

    The digits keep val_fraction, seed, test_fraction, max_examples and progress; column, class,
    mode and size options apply to the requested dataset only."""
    try:
        return load_images(source, **kwargs), None
    except HubUnavailable as e:
        if e.cause == "offline":
            why = f"Hugging Face offline mode is on and {e.name} is not cached"
        else:
            why = f"the Hugging Face hub is unreachable and {e.name} is not cached"
        keep = {k: kwargs[k] for k in ("val_fraction", "seed", "test_fraction", "max_examples",
                                       "progress") if k in kwargs}
        data = load_images(FALLBACK_DATASET, **keep)
        data.fallback_reason = f"{e.name}: {e.reason}"      # the note below is the one line
        return data, f"{why}: training on scikit-learn's 8x8 digits instead"


class BatchIterator:
    """Mini-batches of one split, ready for a model: (x float32 (B, C', H', W') normalised, y int64).

    Each pass (`for x, y in it`) is one epoch. With `shuffle`, each epoch draws a new order from
    `rng`; random crops and flips draw from it too, so the same seed gives the same batches.

    Per batch: pixels -> 0..1 floats; fit to `input_size` (centred zero-padding when the model's
    input is at most 1.25x larger, e.g. MNIST 28x28 -> 32x32 for LeNet-5; else resizing: bilinear
    with Pillow, nearest without); random crop after `crop_padding` zero pixels each side; random
    horizontal flip; (x - mean) / std per channel; and conversion to `channels` (1 -> 3 repeats the
    channel, 3 -> 1 averages)."""

    def __init__(self, split, batch_size, *, shuffle=False, rng=None, input_size=None, mean=None,
                 std=None, channels=None, crop_padding=0, flip=False, drop_last=False):
        x, y = _split_arrays(split)
        if int(batch_size) < 1:
            raise ValueError(f"batch_size={batch_size!r} must be at least 1")
        if crop_padding < 0:
            raise ValueError(f"crop_padding={crop_padding!r} must be 0 (off) or a pixel count")
        if (shuffle or crop_padding or flip) and rng is None:
            raise ValueError("shuffling and augmentation need rng=np.random.default_rng(seed) "
                             "(or an int seed)")
        self.x, self.y = x, y
        self.batch_size = int(batch_size)
        self.shuffle, self.crop_padding, self.flip = bool(shuffle), int(crop_padding), bool(flip)
        self.drop_last = bool(drop_last)
        self.rng = np.random.default_rng(rng) if isinstance(rng, (int, np.integer)) else rng
        self.input_size = _check_size(input_size) or tuple(x.shape[2:])
        self.mean, self.std = _check_stats(mean, std, x.shape[1])
        self.channels = channels

    def __len__(self):
        n, b = len(self.y), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def __iter__(self):
        n = len(self.y)
        order = self.rng.permutation(n) if self.shuffle else np.arange(n)
        stop = (n // self.batch_size) * self.batch_size if self.drop_last else n
        for start in range(0, stop, self.batch_size):
            idx = order[start:start + self.batch_size]
            yield make_batch((self.x, self.y), idx, rng=self.rng, input_size=self.input_size,
                             mean=self.mean, std=self.std, channels=self.channels,
                             crop_padding=self.crop_padding, flip=self.flip)


def make_batch(split, idx, *, rng=None, input_size=None, mean=None, std=None, channels=None,
               crop_padding=0, flip=False):
    """One batch of `split` (the images at `idx`) ready for a model; the per-batch steps of
    BatchIterator. Augmentation (crop_padding, flip) draws from `rng`, which it needs then.
    -> (x float32 (B, channels, H, W), y int64 (B,))."""
    x, y = _split_arrays(split)
    if (crop_padding or flip) and rng is None:
        raise ValueError("augmentation needs rng=np.random.default_rng(seed)")
    xb = _transforms.fit_to_size(_transforms.to_unit_float(x[idx]),
                                 _check_size(input_size) or tuple(x.shape[2:]))
    if crop_padding:
        xb = _transforms.random_crop(xb, crop_padding, rng)
    if flip:
        xb = _transforms.random_flip(xb, rng)
    if mean is not None:
        xb = _transforms.normalise(xb, mean, std)
    xb = _transforms.convert_channels(xb, channels)
    return np.ascontiguousarray(xb, dtype=np.float32), y[idx]


def batches(split, batch_size, *, shuffle=False, rng=None, input_size=None, mean=None, std=None,
            channels=None, crop_padding=0, flip=False, drop_last=False) -> BatchIterator:
    """Iterate over `split` (a Split, or an (x, y) pair) in mini-batches; see BatchIterator.

    split: x (N, C, H, W) uint8 or float32, y (N,) int. input_size: (H, W) or N, the model's input
    (default: the images' size). mean, std: (C,) in 0..1 units, normally ImageData.mean / .std
    (None: no normalisation, pixels in 0..1). channels: the model's input channels (default: the
    data's). Returns a re-iterable BatchIterator with len() = batches per epoch."""
    return BatchIterator(split, batch_size, shuffle=shuffle, rng=rng, input_size=input_size,
                         mean=mean, std=std, channels=channels, crop_padding=crop_padding,
                         flip=flip, drop_last=drop_last)


def preprocess(x, *, input_size=None, mean=None, std=None, channels=None):
    """The deterministic part of `batches` for images outside a split (e.g. to classify them):
    x (N, C, H, W) uint8 or float32 -> float32 (N, channels, H', W') fitted and normalised."""
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"images have shape {x.shape}; preprocess expects (N, C, H, W)")
    mean, std = _check_stats(mean, std, x.shape[1])
    out = _transforms.to_unit_float(x)
    out = _transforms.fit_to_size(out, _check_size(input_size) or tuple(x.shape[2:]))
    if mean is not None:
        out = _transforms.normalise(out, mean, std)
    return np.ascontiguousarray(_transforms.convert_channels(out, channels), dtype=np.float32)


def load_image_files(paths, *, mode=None, image_size=None):
    """Image files (PNG, JPEG, ...) -> uint8 (N, C, H, W), e.g. to classify them with `preprocess`.

    mode: 'L' or 'RGB' to convert every image (use the training data's: 'L' for 1 channel);
    image_size: N or (H, W) to resize every image (shorter side, then a centre crop). Without them
    the files must share one mode and size; the error names the odd ones."""
    paths = [str(p) for p in paths]
    if not paths:
        raise ValueError("no image files given; pass at least one path")
    _image_io.check_mode(mode)
    size = _check_size(image_size)
    stack = _image_io.ImageStack("the images", count=len(paths))
    for path in paths:
        stack.add(_image_io.to_chw(path, f"file {path!r}", mode=mode, size=size), path)
    return stack.finish()


# ------------------------------------------------------------------------------------- sources

def _dataset_name(source):
    """The DATASETS key that `source` names, or None when it is not a plain name."""
    if not isinstance(source, str):
        return None
    key = source.strip().lower()
    for name in DATASETS:
        if key.replace("_", "-") == name.replace("_", "-") or key == name.replace("-", ""):
            return name
    return None


def _hf_spec(source):
    parts = source[len("hf:"):].split(":")
    repo = parts[0]
    if repo.count("/") != 1 or len(parts) > 2 or not all(repo.split("/")):
        raise ValueError(f"{source!r} is not a hub dataset reference; write hf:owner/name or "
                         f"hf:owner/name:config")
    return repo, HubSpec(repo, parts[1] if len(parts) == 2 else None)


def _read_digits():
    x, y = _digits_arrays()
    # 0..16 intensities -> 0..255
    x = np.rint(x * (255.0 / 16.0)).astype(np.uint8)[:, None]
    return _Raw({"train": (x, y)}, name="digits", source="sklearn:load_digits",
                classes=[str(i) for i in range(10)], applied=False)


def _digits_arrays():
    """scikit-learn's 8x8 digits as (images (1797, 8, 8) float64 in 0..16, labels int64).

    The CSV that `sklearn.datasets.load_digits` parses is read directly: importing scikit-learn
    (scipy and all) took about 3 s, most of the default command's time to its first step."""
    import importlib.util
    spec = importlib.util.find_spec("sklearn")   # locates the package without importing it
    if spec is None:
        raise ImportError("the 'digits' dataset comes with scikit-learn, which is not installed: "
                          "pip install scikit-learn")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz"
    if path.is_file():
        import gzip
        with gzip.open(path, mode="rt", encoding="utf-8") as f:
            data = np.loadtxt(f, delimiter=",")
        return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits    # a scikit-learn that keeps the file elsewhere
    digits = load_digits()
    return digits.images, digits.target.astype(np.int64)


def _read_path(source, *, image_column, label_column, mode, size, max_examples, seed, progress):
    text = str(source)
    if not text.strip():
        raise ValueError("the dataset source is empty; pass a name "
                         f"({', '.join(DATASETS)}) or a path")
    path = Path(os.path.expanduser(text))
    if not path.exists():
        if isinstance(source, str) and not _looks_like_path(text):
            raise ValueError(f"unknown dataset name {text!r}: use one of {', '.join(DATASETS)}, "
                             f"hf:owner/name for another hub dataset, or a path to local files")
        hint = (f" (for the hub dataset {text!r}, write hf:{text})"
                if text.count("/") == 1 and not text.startswith((".", "/", "~")) else "")
        raise ValueError(f"the path {text!r} does not exist{hint}; check the path, or use one of "
                         f"{', '.join(DATASETS)}")
    path = path.resolve()
    table_opts = dict(image_column=image_column, label_column=label_column, mode=mode, size=size,
                      max_examples=max_examples, seed=seed, progress=progress)
    if path.is_file():
        fmt = _TABLE_FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise ValueError(_unsupported_file(path))
        return _read_tables(path, {"train": [path]}, fmt, **table_opts)

    idx = _image_io.find_idx_files(path)
    if idx:
        return _read_idx_dir(path, idx)
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        import datasets
        with local_mode():
            loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.Dataset):
            loaded = datasets.DatasetDict({"train": loaded})
        raw = _read_hf_dict(loaded, what=str(path), **table_opts)
        raw.name, raw.source = path.name, f"{path} (datasets save_to_disk)"
        return raw
    tables = _find_tables(path)
    if tables is not None:
        fmt, files = tables
        return _read_tables(path, files, fmt, **table_opts)
    layout = _image_io.image_folder_layout(path)
    if layout is not None:
        return _read_folder(path, layout, mode=mode, size=size, max_examples=max_examples,
                            seed=seed, progress=progress)
    raise ValueError(_unsupported_dir(path))


def _looks_like_path(text):
    return (os.sep in text or "/" in text or text.startswith((".", "~"))
            or Path(text).suffix.lower() in set(_TABLE_FORMATS) | {".gz"})


def _unsupported_file(path):
    if path.suffix.lower() in _image_io.IMAGE_EXTENSIONS:
        return (f"{str(path)!r} is a single image; point at a folder with one sub-folder of images "
                f"per class")
    if re.search(r"idx\d-ubyte(\.gz)?$", path.name):
        return f"{str(path)!r} is one IDX file; point at the folder that holds the IDX files"
    return (f"{str(path)!r} is not a supported format ({path.suffix or 'no extension'}); use "
            f".parquet, .arrow, .csv, .jsonl or .json, a folder of IDX files, or an image folder")


def _unsupported_dir(path):
    subdirs = [p.name for p in sorted(path.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    loose = [p.name for p in sorted(path.iterdir()) if p.is_file() and _image_io._is_image_file(p)]
    if loose:
        return (f"the folder {str(path)!r} holds images ({loose[0]}, ...) but no class sub-folders; "
                f"put each class's images in a sub-folder named after the class")
    if subdirs:
        return (f"the image folder {str(path)!r} is empty: its sub-folders ({', '.join(subdirs[:5])}) "
                f"hold no image files ({', '.join(_image_io.IMAGE_EXTENSIONS[:4])}, ...); add images")
    return (f"the folder {str(path)!r} holds no dataset: no IDX files (train-images-idx3-ubyte[.gz], "
            f"...), no class sub-folders of images, no .parquet/.arrow/.csv/.jsonl files")


def _read_idx_dir(path, idx):
    splits = {}
    for split in ("train", "test"):
        images, labels = idx.get((split, "images")), idx.get((split, "labels"))
        if images is None and labels is None:
            continue
        if images is None or labels is None:
            have = (images or labels).name
            missing = "images-idx3-ubyte" if images is None else "labels-idx1-ubyte"
            prefix = "train" if split == "train" else "t10k"
            raise ValueError(f"{str(path)!r} has {have} but no {prefix}-{missing}[.gz]; add the "
                             f"missing file")
        splits[split] = _image_io.read_idx_split(images, labels)
    if "train" not in splits:
        raise ValueError(f"{str(path)!r} has no train-images-idx3-ubyte[.gz] / "
                         f"train-labels-idx1-ubyte[.gz]; add the training files")
    top = max((int(y.max()) for _, y in splits.values() if len(y)), default=0)
    fashion = "fashion" in str(path).lower() and top < len(FASHION_MNIST_CLASSES)
    return _Raw(splits, name=path.name, source=f"{path} (IDX)",
                classes=list(FASHION_MNIST_CLASSES) if fashion else None,
                where={s: f"the {s} labels of {str(path)!r}" for s in splits}, applied=False)


def _read_folder(path, layout, *, mode, size, max_examples, seed, progress):
    if max_examples is not None:
        rng = np.random.default_rng(seed)
        for split, by_class in layout.items():
            files = [(c, f) for c in sorted(by_class) for f in by_class[c]]
            if len(files) > max_examples:
                keep = np.sort(rng.choice(len(files), max_examples, replace=False))
                chosen = {}
                for i in keep:
                    chosen.setdefault(files[i][0], []).append(files[i][1])
                layout[split] = chosen
    classes = sorted({c for by_class in layout.values() for c in by_class})
    splits = _image_io.read_image_folder(layout, classes, mode=mode, size=size, progress=progress)
    raw = _Raw(splits, name=path.name, source=f"{path} (image folder)", classes=classes)
    return raw


def _find_tables(path):
    """(format, {split: [files]}) for the data tables under `path`, or None when there are none."""
    by_format = {}
    for f in sorted(path.rglob("*")):
        fmt = _TABLE_FORMATS.get(f.suffix.lower())
        rel = f.relative_to(path)
        if fmt and f.is_file() and not any(part.startswith(".") for part in rel.parts):
            by_format.setdefault(f.suffix.lower(), []).append(f)
    if len(by_format) > 1:
        by_format.pop(".json", None)  # metadata beside the data files
    if not by_format:
        return None
    if len(by_format) > 1:
        kinds = ", ".join(f"{len(v)} {k}" for k, v in by_format.items())
        raise ValueError(f"{str(path)!r} mixes table formats ({kinds}); keep one format per folder "
                         f"or point at one file")
    suffix, files = next(iter(by_format.items()))
    splits = {}
    for f in files:
        tokens = re.split(r"[-_./\\ ]+", str(f.relative_to(path)).lower())
        split = next((_image_io.SPLIT_ALIASES[t] for t in tokens if t in _image_io.SPLIT_ALIASES),
                     "train")
        splits.setdefault(split, []).append(f)
    return _TABLE_FORMATS[suffix], splits


def _read_tables(path, files, fmt, **opts):
    import datasets
    cache_dir = datasets_cache_dir()
    files = {split: [f for f in fs if not _empty_table(f, fmt)] for split, fs in files.items()}
    files = {split: fs for split, fs in files.items() if fs}
    if "train" not in files:
        raise ValueError(f"{str(path)!r} is empty (no rows of training data); add images")
    data_files = {split: [str(f) for f in fs] for split, fs in files.items()}
    with local_mode():
        try:
            dd = datasets.load_dataset(fmt, data_files=data_files, cache_dir=cache_dir)
        except Exception as e:  # the builders raise many types for malformed files
            if isinstance(e, (ImportError, MemoryError, KeyboardInterrupt)):
                raise
            cause = e.__cause__ or e
            raise ValueError(f"cannot read {str(path)!r} as {fmt} ({type(cause).__name__}: "
                             f"{str(cause).splitlines()[0] if str(cause) else ''}); check the "
                             f"file's format") from None
    base_dirs = {split: Path(fs[0]).parent for split, fs in files.items()}
    raw = _read_hf_dict(dd, what=str(path), base_dirs=base_dirs, **opts)
    raw.name = path.stem if path.is_file() else path.name
    raw.source = f"{path} ({fmt})"
    return raw


def _empty_table(path, fmt):
    """Whether a table file holds no rows (the `datasets` builders fail on those with odd errors)."""
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq
            return pq.ParquetFile(path).metadata.num_rows == 0
        if fmt in ("csv", "json"):
            with open(path, "rb") as f:
                lines = sum(1 for line in f if line.strip())
            return lines < (2 if fmt == "csv" else 1)
    except Exception:  # unreadable: let the builder report it
        return False
    return False


# ------------------------------------------------------------------- Hugging Face datasets -> arrays

def _read_hf_dict(dd, *, what, image_column, label_column, mode, size, max_examples, seed,
                  progress, base_dirs=None):
    """A DatasetDict / IterableDatasetDict -> _Raw, with the hub's split names mapped to
    train / validation / test (others are left out, with a note)."""
    splits, notes, where, class_names = {}, [], {}, None
    for split_name in dd:
        split = _HF_SPLITS.get(split_name.lower())
        if split is None or split in splits:
            notes.append(f"split {split_name!r} of {what} left out")
            continue
        label = f"the {split_name} split of {what}"
        x, y, names = _read_hf_split(dd[split_name], label, image_column=image_column,
                                     label_column=label_column, mode=mode, size=size,
                                     max_examples=max_examples, seed=seed, progress=progress,
                                     base_dir=(base_dirs or {}).get(split_name))
        splits[split] = (x, y)
        where[split] = label
        class_names = class_names or names
    if "train" not in splits:
        raise ValueError(f"{what} has no training split (its splits: {', '.join(dd) or 'none'}); "
                         f"name the training files or split 'train'")
    return _Raw(splits, name="", source="", classes=class_names, notes=notes, where=where)


def _read_hf_split(ds, what, *, image_column, label_column, mode, size, max_examples, seed,
                   progress, base_dir=None):
    """One Dataset / IterableDataset -> (x (N, C, H, W), labels (N,), class names or None)."""
    import datasets
    iterable = isinstance(ds, datasets.IterableDataset)
    features = ds.features
    columns = list(features) if features is not None else None
    if columns is None:  # a stream without metadata: look at its first row
        columns = list(next(iter(ds)).keys())
    image, label = _pick_columns(columns, features, image_column, label_column, what)
    names = None
    if features is not None and isinstance(features.get(label), datasets.ClassLabel):
        names = list(features[label].names)

    if max_examples is not None:
        if iterable:
            ds = ds.take(max_examples)
        elif len(ds) > max_examples:
            rng = np.random.default_rng(seed)
            ds = ds.select(np.sort(rng.choice(len(ds), max_examples, replace=False)))

    if isinstance(image, list):  # one numeric column per pixel (wide CSV)
        return _read_pixel_columns(ds, image, label, what) + (names,)

    decode_off = features is not None and isinstance(features.get(image), datasets.Image)
    if decode_off:
        ds = ds.cast_column(image, datasets.Image(decode=False))
    count = None if iterable else len(ds)
    stack = _image_io.ImageStack(what, count=count)
    labels = []
    stage = f"reading {what}"
    if iterable:
        rows = ((i, row[image], row[label]) for i, row in enumerate(ds))
    else:
        fmt = ds.select_columns([image, label])
        fmt = fmt if decode_off else fmt.with_format("numpy")
        rows = ((start + j, img, lab)
                for start, batch in _batches_of(fmt)
                for j, (img, lab) in enumerate(zip(batch[image], batch[label])))
    done = 0
    for i, value, lab in rows:
        at = f"row {i} of {what}"
        stack.add(_image_io.to_chw(value, at, mode=mode, size=size, base_dir=base_dir), at)
        labels.append(lab)
        done += 1
        if progress is not None and done % 1024 == 0:
            progress(stage, done, count)
    if progress is not None:
        progress(stage, done, count)
    x = stack.finish()
    if x is None:
        raise ValueError(f"{what} is empty (no rows); add images or point at another split")
    strings = bool(labels) and isinstance(labels[0], str)
    return x, np.asarray(labels, dtype=object if strings else None), names


def _batches_of(ds, size=1024):
    for start in range(0, len(ds), size):
        yield start, ds[start:start + size]


def _pick_columns(columns, features, image_column, label_column, what):
    import datasets

    def typed(kind):
        return [c for c in columns if features is not None and isinstance(features.get(c), kind)]

    if image_column is not None:
        if image_column not in columns:
            raise ValueError(f"{what} has no column {image_column!r} (its columns: "
                             f"{', '.join(columns)}); pass image_column= one of them")
        image = image_column
    else:
        image = next(iter(typed(datasets.Image)), None) or next(
            (col for c in IMAGE_COLUMN_NAMES for col in columns if col.lower() == c), None)
    if label_column is not None:
        if label_column not in columns:
            raise ValueError(f"{what} has no column {label_column!r} (its columns: "
                             f"{', '.join(columns)}); pass label_column= one of them")
        label = label_column
    else:
        label = next(iter(typed(datasets.ClassLabel)), None) or next(
            (col for c in LABEL_COLUMN_NAMES for col in columns if col.lower() == c), None)
    if label is None:
        raise ValueError(f"{what} has no label column (its columns: {', '.join(columns)}); "
                         f"name it with label_column=")
    if image is None:
        pixels = [c for c in columns if c != label and _PIXEL_COLUMN.match(c)]
        if len(pixels) >= 4 and len(pixels) == len(columns) - 1:
            return pixels, label
        raise ValueError(f"{what} has no image column (its columns: {', '.join(columns)}); "
                         f"name it with image_column=")
    return image, label


def _read_pixel_columns(ds, pixels, label, what):
    """Tables with one column per pixel (e.g. Kaggle's mnist_train.csv: label, pixel0..pixel783)."""
    table = ds.select_columns(pixels + [label]).with_format("numpy")[:]
    flat = np.stack([np.asarray(table[c]) for c in pixels], axis=1)
    side = int(round(np.sqrt(flat.shape[1])))
    if side * side != flat.shape[1]:
        raise ValueError(f"{what} has {flat.shape[1]} pixel columns, not a square image; name the "
                         f"image column with image_column=")
    if len(flat) == 0:
        raise ValueError(f"{what} is empty (no rows); add images or point at another split")
    x = _image_io._pixel_dtype(flat, f"the pixel columns of {what}").reshape(-1, 1, side, side)
    return np.ascontiguousarray(x), np.asarray(table[label])


# ---------------------------------------------------------------------------------- assembling

def _assemble(raw, *, classes, val_fraction, test_fraction, seed):
    if "train" not in raw.splits or len(raw.splits["train"][1]) == 0:
        raise ValueError(f"the training split of {raw.source or raw.name} is empty; add images")
    for split, (_, y) in raw.splits.items():
        if len(y) == 0:
            raise ValueError(f"the {split} split of {raw.source or raw.name} is empty; add images "
                             f"or remove it")
    names, labels = _class_ids(raw, classes)
    splits = {s: (x, labels[s]) for s, (x, _) in raw.splits.items()}
    _check_same_images(splits, raw)

    notes = list(raw.notes)
    test_seq, val_seq = np.random.SeedSequence(seed).spawn(2)
    train = splits["train"]
    if "test" in splits:
        test = splits["test"]
        val = splits.get("validation")
    elif "validation" in splits:
        test, val = splits["validation"], None
        notes.append("the source's validation split is used as the test split")
    else:
        train, test = _carve(train, test_fraction, np.random.default_rng(test_seq))
        val = None
        notes.append(f"test split: a seeded stratified {test_fraction:g} of the data (seed {seed})")
    if val is None:
        train, val = _carve(train, val_fraction, np.random.default_rng(val_seq))
    if len(train[1]) == 0:
        raise ValueError(f"no training images are left after carving val_fraction={val_fraction:g} "
                         f"and test_fraction={test_fraction:g}; lower the fractions")
    mean, std = _transforms.channel_stats(train[0])
    return ImageData(train=Split(*train), val=Split(*val), test=Split(*test), classes=names,
                     name=raw.name, source=raw.source, mean=mean, std=std, notes=notes)


def _class_ids(raw, classes):
    """(class names, {split: int64 labels}) from the raw labels."""
    given = [str(c) for c in classes] if classes is not None else None
    names = given or raw.classes
    values = {s: np.asarray(y) for s, (_, y) in raw.splits.items()}
    where = {s: raw.where.get(s, f"the {s} split of {raw.source or raw.name}") for s in values}
    strings = any(v.dtype.kind in "USO" for v in values.values())
    if strings:
        for s, v in values.items():
            for i, item in enumerate(v):
                if item is None:
                    raise ValueError(f"row {i} of {where[s]} has no label; label it or drop the row")
                if not isinstance(item, str):
                    raise ValueError(f"label {item!r} at row {i} of {where[s]} is not a string like "
                                     f"the others; use one type of label")
        if names is None:
            names = sorted({str(item) for v in values.values() for item in v})
        index = {n: i for i, n in enumerate(names)}
        out = {}
        for s, v in values.items():
            ids = np.fromiter((index.get(item, -1) for item in v), dtype=np.int64, count=len(v))
            bad = np.flatnonzero(ids < 0)
            if bad.size:
                i = int(bad[0])
                raise ValueError(f"label {v[i]!r} at row {i} of {where[s]} is not one of the classes "
                                 f"({', '.join(names[:10])}{', ...' if len(names) > 10 else ''}); "
                                 f"fix the label or pass classes= with every class name")
            out[s] = ids
        return names, out

    out = {}
    for s, v in values.items():
        if v.dtype.kind == "f":
            missing = np.flatnonzero(~np.isfinite(v))
            if missing.size:
                raise ValueError(f"row {int(missing[0])} of {where[s]} has no label; label it or "
                                 f"drop the row")
            fractional = np.flatnonzero(v != np.round(v))
            if fractional.size:
                i = int(fractional[0])
                raise ValueError(f"label {v[i]!r} at row {i} of {where[s]} is not a whole number; "
                                 f"labels must be class ids 0..K-1 or class names")
        elif v.dtype.kind not in "iub":
            raise ValueError(f"the labels of {where[s]} have type {v.dtype}; use integer class ids "
                             f"or class names")
        ids = v.astype(np.int64)
        negative = np.flatnonzero(ids < 0)
        if negative.size:
            i = int(negative[0])
            raise ValueError(f"label {int(ids[i])} at row {i} of {where[s]} is negative; labels must "
                             f"be class ids 0..K-1 (the hub marks unlabelled rows with -1: use a "
                             f"labelled split)")
        if names is not None:
            high = np.flatnonzero(ids >= len(names))
            if high.size:
                i = int(high[0])
                raise ValueError(f"label {int(ids[i])} at row {i} of {where[s]} is out of range for "
                                 f"{len(names)} classes (0..{len(names) - 1}); fix the label or pass "
                                 f"classes= with every class name")
        out[s] = ids
    if names is None:
        names = [str(i) for i in range(max(int(v.max()) for v in out.values()) + 1)]
    return names, out


def _check_same_images(splits, raw):
    train_x = splits["train"][0]
    for s, (x, _) in splits.items():
        if x.shape[1:] != train_x.shape[1:] or x.dtype != train_x.dtype:
            raise ValueError(f"the {s} images of {raw.source or raw.name} are {_shape_text(x)} but "
                             f"the training images are {_shape_text(train_x)}; convert them with "
                             f"mode='L' / mode='RGB' and image_size=")


def _shape_text(x):
    return f"{x.shape[1]}-channel {x.shape[2]}x{x.shape[3]} {x.dtype.name}"


def _carve(split, fraction, rng):
    """Split (x, y) into (kept, carved): round(fraction * N) images, shared among the classes in
    proportion to their sizes (largest remainders first, ties broken by `rng`), drawn from `rng`."""
    x, y = split
    if fraction <= 0 or len(y) < 2:
        return split, (x[:0], y[:0])
    total = min(max(int(round(fraction * len(y))), 1), len(y) - 1)
    classes, counts = np.unique(y, return_counts=True)
    quota = total * counts / len(y)
    take = np.floor(quota).astype(np.int64)
    tie_break = rng.permutation(len(classes))
    by_remainder = sorted(range(len(classes)), key=lambda c: (-(quota[c] - take[c]), tie_break[c]))
    for c in by_remainder[:total - int(take.sum())]:
        take[c] += 1
    mask = np.zeros(len(y), dtype=bool)
    for c, k in zip(classes, take):
        mask[rng.permutation(np.flatnonzero(y == c))[:k]] = True
    return (x[~mask], y[~mask]), (x[mask], y[mask])


def _convert(x, mode, size):
    """Apply `mode` ('L', 'RGB') and `size` (H, W) to a whole (N, C, H, W) array."""
    if mode == "RGB" and x.shape[1] == 1:
        x = np.repeat(x, 3, axis=1)
    elif mode == "L" and x.shape[1] == 3:
        mean = x.mean(axis=1, keepdims=True, dtype=np.float32)
        x = np.rint(mean).astype(np.uint8) if x.dtype == np.uint8 else mean
    if size is not None:
        x = _transforms.resize_cover(x, size)
    return x


def _limit(splits, max_examples, seed):
    rng = np.random.default_rng(seed)
    out = {}
    for s, (x, y) in splits.items():
        if len(y) > max_examples:
            keep = np.sort(rng.choice(len(y), max_examples, replace=False))
            x, y = x[keep], y[keep]
        out[s] = (x, y)
    return out


# --------------------------------------------------------------------------------------- checks

def _check_size(size):
    if size is None:
        return None
    if isinstance(size, (int, np.integer)):
        size = (int(size), int(size))
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"image size {size!r} is not N or (H, W); pass e.g. 32 or (32, 32)") from None
    if h < 1 or w < 1:
        raise ValueError(f"image size {size!r} must be positive; pass e.g. 32 or (32, 32)")
    return h, w


def _check_stats(mean, std, channels):
    if (mean is None) != (std is None):
        raise ValueError("pass both mean= and std= (e.g. data.mean, data.std), or neither")
    if mean is None:
        return None, None
    mean = np.asarray(mean, dtype=np.float32).reshape(-1)
    std = np.asarray(std, dtype=np.float32).reshape(-1)
    for label, v in (("mean", mean), ("std", std)):
        if v.size not in (1, channels):
            raise ValueError(f"{label} has {v.size} values for {channels}-channel images; pass one "
                             f"per channel of the data (ImageData.{label})")
    return mean, std


def _split_arrays(split):
    if isinstance(split, Split):
        x, y = split.x, split.y
    else:
        try:
            x, y = split
        except (TypeError, ValueError):
            raise ValueError(f"split must be a Split or an (x, y) pair, not "
                             f"{type(split).__name__}") from None
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim != 4 or y.ndim != 1 or len(x) != len(y):
        raise ValueError(f"split arrays have shapes x {x.shape}, y {y.shape}; expected x (N, C, H, W) "
                         f"and y (N,)")
    return x, y.astype(np.int64, copy=False)
