"""Reading images into (N, C, H, W) arrays: single values (PIL images, encoded bytes, file paths,
arrays), IDX files and image folders.

Images are uint8 (1 channel for greyscale, 3 for colour) unless the source holds floats, which stay
float32. Every image of a dataset must share one mode and one size, unless a `mode` ('L', 'RGB') or
an `image_size` (H, W) is given, to which each image is then converted as it is read.
"""
import gzip
import io
import os
import re
import struct
from pathlib import Path

import numpy as np

from numconv.data import _transforms

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm",
                    ".pgm", ".pbm")
# Errors about mixed images name this many examples of each kind.
EXAMPLES_IN_ERRORS = 2

# Pillow modes -> the mode numconv reads them as: 'L' (1 channel), 'RGB' (3) or 'F' (1, float).
_BASE_MODE = {"1": "L", "L": "L", "LA": "L", "La": "L", "P": "RGB", "PA": "RGB", "RGB": "RGB",
              "RGBA": "RGB", "RGBa": "RGB", "RGBX": "RGB", "CMYK": "RGB", "YCbCr": "RGB",
              "LAB": "RGB", "HSV": "RGB", "I": "F", "I;16": "F", "I;16B": "F", "I;16L": "F",
              "F": "F"}
_MODE_CHANNELS = {"L": 1, "RGB": 3}


def require_pillow(what):
    Image = _transforms.pillow()
    if Image is None:
        raise ImportError(f"reading {what} needs Pillow, which is not installed: pip install pillow")
    return Image


def check_mode(mode):
    if mode is not None and mode not in _MODE_CHANNELS:
        raise ValueError(f"mode={mode!r} is not supported: use mode='L' (greyscale) or mode='RGB'")
    return mode


# ------------------------------------------------------------------------------------ one image

def to_chw(value, where, *, mode=None, size=None, base_dir=None):
    """One image -> (C, H, W) uint8 or float32 array.

    value: a PIL image; a dict with 'bytes' and/or 'path' (Hugging Face's Image storage); encoded
    bytes; a file path (relative to `base_dir`); or an array (H, W), (H, W, C), (C, H, W), or a flat
    (H*W,) vector of a square greyscale image. `where` names the value in error messages."""
    if value is None:
        raise ValueError(f"{where} has no image (the cell is empty); drop the row or fill it in")
    if isinstance(value, dict):
        data, path = value.get("bytes"), value.get("path")
        if data is not None:
            value = bytes(data)
        elif path:
            value = str(path)
        else:
            raise ValueError(f"{where} holds a dict without 'bytes' or 'path' ({sorted(value)}); "
                             f"store the encoded image under 'bytes'")
    if isinstance(value, (bytes, bytearray, memoryview, str, os.PathLike)):
        value = _open(value, where, base_dir)
    Image = _transforms.pillow()
    if Image is not None and isinstance(value, Image.Image):
        return _pil_to_chw(value, where, mode, size)
    return _array_to_chw(value, where, mode, size)


def _open(value, where, base_dir):
    Image = require_pillow("encoded images (PNG, JPEG, ...)")
    if isinstance(value, (str, os.PathLike)):
        path = Path(value)
        if base_dir is not None and not path.is_absolute():
            path = Path(base_dir) / path
        if not path.is_file():
            raise ValueError(f"{where} names the image file {str(path)!r}, which does not exist; "
                             f"fix the path (relative paths are read from {str(base_dir or '.')!r})")
        source = path
    else:
        source = io.BytesIO(bytes(value))
    try:
        img = Image.open(source)
        img.load()
    except Exception as e:  # Pillow raises several types for undecodable data
        raise ValueError(f"{where} is not a readable image ({type(e).__name__}: {e}); "
                         f"remove or replace it") from None
    return img


def _pil_to_chw(img, where, mode, size):
    Image = _transforms.pillow()
    base = _BASE_MODE.get(img.mode, "RGB")
    target = mode or base
    if target == "F":
        if img.mode in ("I;16", "I;16B", "I;16L"):
            arr = np.asarray(img, dtype=np.float32) / np.float32(65535.0)
        else:
            arr = np.asarray(img.convert("F"), dtype=np.float32)
        arr = arr[None]
        return _transforms.resize_cover(arr[None], size)[0] if size else arr
    if img.mode != target:
        img = img.convert(target)
    if size is not None and (img.height, img.width) != tuple(size):
        H, W = size
        scale = max(H / img.height, W / img.width)
        sw, sh = max(W, round(img.width * scale)), max(H, round(img.height * scale))
        img = img.resize((sw, sh), Image.BILINEAR)
        left, top = (sw - W) // 2, (sh - H) // 2
        img = img.crop((left, top, left + W, top + H))
    arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else np.ascontiguousarray(arr.transpose(2, 0, 1))


def _array_to_chw(value, where, mode, size):
    arr = np.asarray(value)
    if arr.dtype == object:
        raise ValueError(f"{where} is not a rectangular array of pixels (ragged lists or mixed "
                         f"types); store each image as an (H, W) or (H, W, C) array")
    if arr.ndim == 1:
        side = int(round(np.sqrt(arr.size)))
        if side * side != arr.size or arr.size == 0:
            raise ValueError(f"{where} is a flat vector of {arr.size} pixels, not a square image; "
                             f"store it as an (H, W) array")
        arr = arr.reshape(1, side, side)
    elif arr.ndim == 2:
        arr = arr[None]
    elif arr.ndim == 3:
        if arr.shape[-1] in (1, 3, 4):
            arr = arr.transpose(2, 0, 1)
        elif arr.shape[0] not in (1, 3, 4):
            raise ValueError(f"{where} has shape {arr.shape}: no axis of size 1, 3 or 4 holds the "
                             f"channels; store images as (H, W), (H, W, C) or (C, H, W)")
        if arr.shape[0] == 4:
            arr = arr[:3]  # drop alpha
    else:
        raise ValueError(f"{where} has shape {arr.shape}; images must be 2-D (H, W) or 3-D (H, W, C)")
    arr = _pixel_dtype(arr, where)
    if mode is not None:
        want = _MODE_CHANNELS[mode]
        if arr.shape[0] != want:
            if want == 1:
                mean = arr.mean(axis=0, keepdims=True)
                is_uint8 = arr.dtype == np.uint8
                arr = np.rint(mean).astype(np.uint8) if is_uint8 else mean.astype(np.float32)
            else:
                arr = np.repeat(arr, want, axis=0)
    if size is not None and arr.shape[1:] != tuple(size):
        arr = _transforms.resize_cover(arr[None], size)[0]
    return np.ascontiguousarray(arr)


def _pixel_dtype(arr, where):
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * np.uint8(255)
    if np.issubdtype(arr.dtype, np.integer):
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise ValueError(f"{where} has integer pixels in {arr.min()}..{arr.max()}, outside "
                             f"0..255; store 8-bit pixels, or floats")
        return arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        return arr.astype(np.float32)
    raise ValueError(f"{where} has pixels of type {arr.dtype}; store uint8 or float pixels")


# ------------------------------------------------------------------------------- many images

class ImageStack:
    """Collects (C, H, W) images of one dataset split into an (N, C, H, W) array, checking as it goes
    that they share one kind (dtype and channel count) and one size; the error names examples."""

    def __init__(self, what, count=None):
        self.what = what
        self.count = count
        self.out = None
        self.items = []
        self.n = 0
        self.first_where = None
        self.odd = {}  # (kind, size) -> [wheres] for images unlike the first

    def add(self, arr, where):
        if self.n == 0:
            self.first_where = where
            self.key = _key(arr)
            if self.count is not None:
                self.out = np.empty((self.count,) + arr.shape, dtype=arr.dtype)
        key = _key(arr)
        if key != self.key:
            examples = self.odd.setdefault(key, [])
            if len(examples) < EXAMPLES_IN_ERRORS:
                examples.append(where)
            self.n += 1
            return
        if self.out is not None:
            self.out[self.n] = arr
        else:
            self.items.append(arr)
        self.n += 1

    def finish(self):
        if self.odd:
            (kind0, size0) = self.key
            parts = [f"{_describe(kind0, size0)} (e.g. {self.first_where})"]
            for (kind, size), wheres in self.odd.items():
                parts.append(f"{_describe(kind, size)} (e.g. {', '.join(wheres)})")
            kinds = {k for k, _ in [self.key, *self.odd]}
            sizes = {s for _, s in [self.key, *self.odd]}
            fixes = []
            if len(kinds) > 1:
                fixes.append("convert them all with mode='L' or mode='RGB'")
            if len(sizes) > 1:
                fixes.append("resize them all with image_size=N or image_size=(H, W)")
            what = " and ".join(w for w, many in (("modes", len(kinds) > 1), ("sizes", len(sizes) > 1))
                                if many)
            raise ValueError(f"{self.what} mixes image {what}: {'; '.join(parts)}; "
                             f"{' and '.join(fixes)}")
        if self.out is not None:
            return self.out[:self.n]
        if not self.items:
            return None
        return np.stack(self.items)


def _key(arr):
    return (f"{arr.dtype.name}x{arr.shape[0]}", tuple(arr.shape[1:]))


def _describe(kind, size):
    dtype, c = kind.split("x")
    mode = {("uint8", "1"): "greyscale", ("uint8", "3"): "RGB"}.get((dtype, c), f"{c}-channel {dtype}")
    return f"{mode} {size[0]}x{size[1]}"


# ------------------------------------------------------------------------------------------ IDX

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_IDX_ROLE = re.compile(r"(?:^|[-_.])(train|t10k|test)-(images|labels)[-.]idx([13])-ubyte(\.gz)?$")


def read_idx(path):
    """One IDX file (MNIST's format; gzip or plain) -> a NumPy array of its shape and type."""
    path = Path(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise ValueError(f"cannot read the IDX file {str(path)!r} ({e}); re-download it") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{str(path)!r} is not an IDX file (its first bytes are "
                         f"{data[:4].hex()}); point at MNIST-format train-images-idx3-ubyte / "
                         f"train-labels-idx1-ubyte files")
    dtype, ndim = np.dtype(_IDX_DTYPES[data[2]]), data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"the IDX file {str(path)!r} ends inside its header; the file is "
                         f"truncated or corrupt: re-download it")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise ValueError(f"the IDX file {str(path)!r} holds {len(data)} bytes but its header "
                         f"{dims} needs {expected}; the file is truncated or corrupt: re-download it")
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=False)


def find_idx_files(directory):
    """{('train'|'test', 'images'|'labels'): Path} for the IDX files in `directory` (plain files are
    preferred to .gz twins). Empty when there are none."""
    found = {}
    for path in sorted(Path(directory).iterdir()):
        m = _IDX_ROLE.search(path.name)
        if not m or not path.is_file():
            continue
        split = "train" if m.group(1) == "train" else "test"
        role = (split, m.group(2))
        stem = path.name[:-3] if path.name.endswith(".gz") else path.name
        previous = found.get(role)
        if previous is not None:
            prev_stem = previous.name[:-3] if previous.name.endswith(".gz") else previous.name
            if prev_stem != stem:
                raise ValueError(f"{str(directory)!r} holds several {split} {m.group(2)} IDX files "
                                 f"({previous.name}, {path.name}); point at a folder with one dataset")
            if path.name.endswith(".gz"):
                continue
        found[role] = path
    return found


def read_idx_split(images_path, labels_path):
    """(x (N, C, H, W), y (N,)) from an IDX image file and its label file."""
    x = read_idx(images_path)
    y = read_idx(labels_path)
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    else:
        raise ValueError(f"the IDX image file {str(images_path)!r} has shape {x.shape}; expected "
                         f"(N, H, W) images")
    if y.ndim != 1:
        raise ValueError(f"the IDX label file {str(labels_path)!r} has shape {y.shape}; expected (N,)")
    if len(x) != len(y):
        raise ValueError(f"{Path(images_path).name} holds {len(x)} images but "
                         f"{Path(labels_path).name} holds {len(y)} labels; use matching files")
    if x.dtype != np.uint8:
        x = _pixel_dtype(x, str(images_path))
    return np.ascontiguousarray(x), y.astype(np.int64)


# ------------------------------------------------------------------------------- image folders

SPLIT_ALIASES = {"train": "train", "training": "train", "test": "test", "testing": "test",
                 "val": "validation", "valid": "validation", "validation": "validation",
                 "dev": "validation"}


def _is_image_file(path):
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _subdirs(path):
    return sorted(p for p in Path(path).iterdir() if p.is_dir() and not p.name.startswith("."))


def _has_images(directory):
    return any(_is_image_file(p) for p in Path(directory).rglob("*"))


def image_folder_layout(root):
    """{split: {class name: [files]}} for an image folder (one sub-folder per class, optionally under
    train/ and test/ or val/ folders), or None when `root` is not laid out that way."""
    root = Path(root)
    subdirs = _subdirs(root)
    split_dirs = {SPLIT_ALIASES[d.name.lower()]: d for d in subdirs if d.name.lower() in SPLIT_ALIASES}
    if "train" in split_dirs and all(_subdirs(d) for d in split_dirs.values()):
        roots = split_dirs
    else:
        roots = {"train": root}
    layout = {}
    for split, split_root in roots.items():
        classes = {}
        for class_dir in _subdirs(split_root):
            files = sorted(p for p in class_dir.rglob("*") if p.is_file() and _is_image_file(p))
            if files:
                classes[class_dir.name] = files
        if classes:
            layout[split] = classes
    return layout or None


def read_image_folder(layout, classes, *, mode=None, size=None, progress=None):
    """{split: (x, y)} from `image_folder_layout`'s files; labels index `classes`."""
    require_pillow("image folders")
    index = {name: i for i, name in enumerate(classes)}
    out = {}
    total = sum(len(f) for split in layout.values() for f in split.values())
    done = 0
    for split, by_class in layout.items():
        files = [(path, index[name]) for name, paths in sorted(by_class.items()) for path in paths]
        stack = ImageStack(f"the {split} images", count=len(files))
        for path, _ in files:
            stack.add(to_chw(str(path), f"file {str(path)!r}", mode=mode, size=size), str(path))
            done += 1
            if progress is not None and (done % 1024 == 0 or done == total):
                progress("reading images", done, total)
        out[split] = (stack.finish(), np.array([label for _, label in files], dtype=np.int64))
    return out
