"""Streaming image data: train on datasets too large for memory, reading each split as a stream.

    from numconv.data.streaming import open_stream, StreamBatches
    data = open_stream("imagenette", val_fraction=0.1)       # or a parquet file, an image folder
    for x, y in data.test.batches(256):                       # uint8 (B, C, H, W), int64 (B,)
        ...
    epoch = StreamBatches(data.train, 64, seed=0, epoch=3, prepare=prepare)   # batch i, in order

Every split is a Hugging Face `datasets.IterableDataset` of rows {'index', 'image', 'label'}, the image
still encoded (PNG/JPEG bytes, a file path, or an array) and decoded per batch. Nothing holds a split:
memory is the shuffle buffer (encoded rows) plus one decoded batch.

Order and reproducibility. `index` is an example's position in the source (shard by shard, in the
source's own order); it is attached where the rows are read, so it does not depend on how a shuffle
reorders the shards. Training order is datasets' seeded shuffle (shards reordered and interleaved,
then a buffer of `shuffle_buffer` rows) with `set_epoch(epoch)` for a new order each epoch; the same
(seed, epoch) gives the same order. A run resumed inside an epoch replays that epoch's stream and
skips the rows already trained on without decoding them.

Splits. As in `images.load_images`: the source's test split, else its validation split, else a carved
test split; the source's validation split when it also has a test split, else a carved one. Carving
is by position, not by a seeded draw (a stream cannot be permuted): with `test_fraction` 0.2 every 5th
example (index % 5 == 0) is held out for test, and of the rest, with `val_fraction` 0.1, every 10th.
Disjoint, reproducible, and the sizes follow from the row count alone. Row counts come from the
source's metadata (parquet footers, the hub's split sizes, file lists) or, when it has none, from one
pass over the label column, which also finds the class names when the source does not give them.

Normalisation statistics come from the first `stats_sample` training examples in source order
(all of them when the split is smaller).
"""
import itertools
import os
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional

import numpy as np

from numconv.data import _image_io, _transforms
from numconv.data import images as _images
from numconv.data._hub import datasets_cache_dir, load_hub_dataset, local_mode

__all__ = ["DEFAULT_SHUFFLE_BUFFER", "DEFAULT_STATS_SAMPLE", "StreamSplit", "StreamData",
           "StreamBatches", "open_stream", "streamable", "estimated_bytes"]

DEFAULT_SHUFFLE_BUFFER = 10_000   # rows (encoded images) held by the training shuffle buffer
DEFAULT_STATS_SAMPLE = 10_000     # training images the normalisation statistics are computed on
ROWS_PER_SHARD = 1_000            # shard size for sources without shards (image folders, caches)
STATS_BLOCK_VALUES = 1 << 24      # pixels per block of the statistics pass (float64: 128 MiB)
STATS_BLOCK_IMAGES = 4096         # and at most this many images: channel_stats' chunk, same bits

Progress = Callable[[str, int, Optional[int]], None]


# ------------------------------------------------------------------------------------- sources

class _Source:
    """One split of a source in its fixed order, read shard by shard. `shards` is a list of
    (key, rows); `read(key)` yields (image value, raw label) for that shard."""
    what = ""
    base_dir = None
    shards = None

    def read(self, key):
        raise NotImplementedError

    def read_labels(self, key):
        return ((None, label) for _, label in self.read(key))


class _IterableSource(_Source):
    """A `datasets.IterableDataset` (the hub streaming, local tables): its own shards."""

    def __init__(self, ds, image, label, what, counts=None, base_dir=None):
        self.ds, self.image, self.label, self.what, self.base_dir = ds, image, label, what, base_dir
        keys = range(ds.n_shards)
        self.shards = None if counts is None else list(zip(keys, counts))
        self.keys = list(keys)

    def _part(self, key):
        return self.ds if self.ds.n_shards == 1 else self.ds.shard(self.ds.n_shards, key)

    def read(self, key):
        for row in self._part(key):
            yield row[self.image], row[self.label]

    def read_labels(self, key):
        for row in self._part(key).select_columns([self.label]):
            yield None, row[self.label]


class _TableSource(_Source):
    """A map-style `datasets.Dataset` (a cached hub download, a save_to_disk folder): memory-mapped
    Arrow, read in slices."""

    def __init__(self, ds, image, label, what):
        self.ds, self.image, self.label, self.what = ds, image, label, what
        n = ds.num_rows
        self.shards = [((s, min(n, s + ROWS_PER_SHARD)), min(n, s + ROWS_PER_SHARD) - s)
                       for s in range(0, n, ROWS_PER_SHARD)]
        self.keys = [k for k, _ in self.shards]

    def read(self, key):
        start, stop = key
        for s in range(start, stop, 256):
            part = self.ds[s:min(stop, s + 256)]
            yield from zip(part[self.image], part[self.label])

    def read_labels(self, key):
        start, stop = key
        labels = self.ds.select_columns([self.label])[start:stop][self.label]
        return ((None, label) for label in labels)


class _FileSource(_Source):
    """An image folder: (path, class id) pairs in the in-memory reader's order (class, then file)."""

    def __init__(self, files, what):
        self.files, self.what = files, what
        n = len(files)
        self.shards = [((s, min(n, s + ROWS_PER_SHARD)), min(n, s + ROWS_PER_SHARD) - s)
                       for s in range(0, n, ROWS_PER_SHARD)]
        self.keys = [k for k, _ in self.shards]

    def read(self, key):
        start, stop = key
        for path, label in self.files[start:stop]:
            yield {"bytes": None, "path": path}, label


# datasets hashes a generator's keyword arguments to name its builder; a token hashes in no time
_SOURCES = weakref.WeakValueDictionary()


def _indexed_rows(shards, token):
    """The generator behind every stream: rows of the shards given, each with its source position."""
    source = _SOURCES[token]
    for key, offset, count in shards:
        n = 0
        for image, label in source.read(key):
            if n == count:
                break
            yield {"index": offset + n, "image": image, "label": label}
            n += 1
        if n != count:
            raise ValueError(f"{source.what} changed while it was read: shard {key} has {n} rows, "
                             f"{count} were counted; start the run again")


def _as_stream(source):
    import datasets
    token = f"{id(source):x}"
    _SOURCES[token] = source
    offsets = np.concatenate([[0], np.cumsum([c for _, c in source.shards])[:-1]]).astype(int)
    shards = [(key, int(off), int(count)) for (key, count), off in zip(source.shards, offsets)]
    return datasets.IterableDataset.from_generator(_indexed_rows,
                                                   gen_kwargs={"shards": shards, "token": token})


# ------------------------------------------------------------------------------------- splits

@dataclass(frozen=True)
class _Carving:
    """Which positions of a source split go where: every `test_every`-th example to test (when the
    source has no test split), then every `val_every`-th of the rest to validation; training keeps
    the first `limit` of what is left."""
    test_every: int = 0
    val_every: int = 0
    limit: Optional[int] = None

    def role(self, index):
        """-> (split name, rank within it)."""
        rank = index
        if self.test_every:
            if rank % self.test_every == 0:
                return "test", rank // self.test_every
            rank -= rank // self.test_every + 1
        if self.val_every:
            if rank % self.val_every == 0:
                return "validation", rank // self.val_every
            rank -= rank // self.val_every + 1
        if self.limit is not None and rank >= self.limit:
            return "unused", rank
        return "train", rank

    def sizes(self, n):
        """{split: count} for a source split of n examples."""
        out = {}
        if self.test_every:
            out["test"] = -(-n // self.test_every)
            n -= out["test"]
        if self.val_every:
            out["validation"] = -(-n // self.val_every)
            n -= out["validation"]
        out["train"] = n if self.limit is None else min(n, self.limit)
        return out


class _Keep:
    """Filter predicate on `index`: the rows of one carved split."""

    def __init__(self, carving, split):
        self.carving, self.split = carving, split

    def __call__(self, index):
        return self.carving.role(index)[0] == self.split


class _Decoder:
    """Rows -> (uint8 or float32 (B, C, H, W), int64 (B,)), checking every image against the first
    training image's mode and size, and every label against the classes."""

    def __init__(self, names, label_index, mode, size):
        self.names, self.label_index, self.mode, self.size = names, label_index, mode, size
        self.key = None
        self.first = None

    def image(self, value, at, base_dir):
        arr = _image_io.to_chw(value, at, mode=self.mode, size=self.size, base_dir=base_dir)
        key = _image_io._key(arr)
        if self.key is None:
            self.key, self.first = key, at
        elif key != self.key:
            raise ValueError(f"{at} is {_image_io._describe(*key)} but {self.first} is "
                             f"{_image_io._describe(*self.key)}; a stream needs one mode and size: "
                             f"convert the images (mode='L'/'RGB', image_size=N)")
        return arr

    def label(self, value, at):
        if value is None:
            raise ValueError(f"{at} has no label; label it or drop the row")
        if self.label_index is not None:
            if not isinstance(value, str):
                raise ValueError(f"label {value!r} at {at} is not a string like the others; use "
                                 f"one type of label")
            if value not in self.label_index:
                raise ValueError(f"label {value!r} at {at} is not one of the classes "
                                 f"({', '.join(self.names[:10])}); fix the label or pass classes=")
            return self.label_index[value]
        if isinstance(value, str) or not float(value).is_integer():
            raise ValueError(f"label {value!r} at {at} is not a class id; labels must be class "
                             f"ids 0..{len(self.names) - 1} or class names")
        y = int(value)
        if not 0 <= y < len(self.names):
            raise ValueError(f"label {y} at {at} is out of range for {len(self.names)} classes "
                             f"(0..{len(self.names) - 1}); fix the label or pass classes=")
        return y

    def rows(self, rows, what, base_dir):
        xs, ys = [], []
        for row in rows:
            at = f"example {row['index']} of {what}"
            xs.append(self.image(row["image"], at, base_dir))
            ys.append(self.label(row["label"], at))
        return np.stack(xs), np.asarray(ys, dtype=np.int64)


@dataclass
class StreamSplit:
    """One split as a stream: `dataset` yields rows {'index', 'image', 'label'} in source order;
    `count` rows in all (known before reading: `len()` never reads the data)."""
    name: str
    dataset: object
    count: int
    what: str
    decoder: _Decoder
    base_dir: Optional[str] = None
    source: object = None   # keeps the rows' reader alive (the stream refers to it by a token)

    def __len__(self):
        return self.count

    def rows(self, *, seed=None, epoch=0, shuffle_buffer=0):
        """The rows, undecoded: in source order, or (shuffle_buffer > 1) in datasets' seeded
        shuffle for this epoch."""
        ds = self.dataset
        if shuffle_buffer and shuffle_buffer > 1:
            ds = ds.shuffle(seed=seed, buffer_size=int(shuffle_buffer))
            ds.set_epoch(epoch)
        return iter(ds)

    def decode(self, rows):
        """A list of rows -> (x (B, C, H, W) uint8 or float32, y (B,) int64)."""
        return self.decoder.rows(rows, self.what, self.base_dir)

    def batches(self, batch_size):
        """(x, y) batches in source order, decoded, not normalised (for evaluation)."""
        it = self.rows()
        while True:
            rows = list(itertools.islice(it, batch_size))
            if not rows:
                return
            yield self.decode(rows)


@dataclass
class StreamData:
    """What `open_stream` returns: the three splits as streams, class names, and normalisation
    statistics (`mean`, `std`, (C,) float32 in 0..1 units) of the first `stats_images` training
    images. `image_shape` is (C, H, W) of the stored images."""
    train: StreamSplit
    val: StreamSplit
    test: StreamSplit
    classes: List[str]
    name: str
    source: str
    mean: np.ndarray
    std: np.ndarray
    image_shape: tuple
    stats_images: int
    notes: List[str] = field(default_factory=list)

    @property
    def channels(self):
        return self.image_shape[0]

    @property
    def image_size(self):
        return tuple(self.image_shape[1:])

    @property
    def num_classes(self):
        return len(self.classes)

    def info(self):
        return {"name": self.name, "source": self.source, "classes": list(self.classes),
                "channels": self.channels, "image_size": list(self.image_size), "streamed": True,
                "sizes": {"train": len(self.train), "val": len(self.val), "test": len(self.test)},
                "mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std],
                "stats_images": self.stats_images, "notes": list(self.notes)}


class StreamBatches:
    """The training batches of one epoch of a streamed split, as loop.fit wants them: len() and
    batch i by index. Batch i is a pure function of (seed, epoch, i): the rows come from the
    epoch's shuffled stream, the augmentation from default_rng([seed, epoch, i + 1]) exactly as
    train.image.EpochBatches draws it, so the same rows give the same batch as the in-memory path.

    Batches are read in increasing order. Asking for a later batch than the next one (a resumed
    run) skips the rows in between without decoding them; asking for an earlier one restarts the
    epoch's stream."""

    def __init__(self, split, batch_size, *, seed, epoch, prepare, shuffle_buffer=0,
                 augment=True):
        self.split, self.batch_size, self.prepare, self.augment = split, batch_size, prepare, augment
        self.seed, self.epoch, self.shuffle_buffer = seed, epoch, shuffle_buffer
        self._rows = None
        self._next = 0
        self.skipped = 0   # rows skipped to reach a later batch (tests look)

    def __len__(self):
        return -(-self.split.count // self.batch_size)

    def __getitem__(self, i):
        if not 0 <= i < len(self):
            raise IndexError(i)
        if self._rows is None or i < self._next:
            self._rows = self.split.rows(seed=self.seed, epoch=self.epoch,
                                         shuffle_buffer=self.shuffle_buffer)
            self._next = 0
        if i > self._next:
            skip = (i - self._next) * self.batch_size
            self.skipped += sum(1 for _ in itertools.islice(self._rows, skip))
        rows = list(itertools.islice(self._rows, self.batch_size))
        self._next = i + 1
        expected = min(self.batch_size, self.split.count - i * self.batch_size)
        if len(rows) != expected:
            raise ValueError(f"{self.split.what} ended early: batch {i + 1} has {len(rows)} rows, "
                             f"{expected} expected; the source changed, start the run again")
        x, y = self.split.decode(rows)
        rng = np.random.default_rng([self.seed, self.epoch, i + 1])
        return self.prepare((x, y), np.arange(len(y)), rng, self.augment)


# ---------------------------------------------------------------------------------- opening

def streamable(source):
    """None when `source` can be streamed, else one line saying why not (and what to do)."""
    name = _images._dataset_name(source)
    if name == "digits":
        return ("'digits' is scikit-learn's 1,797 embedded images, always held in memory; drop "
                "--stream")
    if name is not None or str(source).startswith("hf:"):
        return None
    path = Path(os.path.expanduser(str(source)))
    if path.is_dir() and _image_io.find_idx_files(path):
        return (f"{str(path)!r} holds IDX files, which are read whole (MNIST-sized); drop --stream, "
                f"or convert them to parquet to stream them")
    return None


def estimated_bytes(source):
    """A lower bound on the decoded size of a local source: its files' size on disk (encoded images
    only grow when decoded). None for names and hub references."""
    path = Path(os.path.expanduser(str(source)))
    if not path.exists() or _images._dataset_name(source) is not None:
        return None
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def open_stream(source, *, val_fraction=0.1, test_fraction=_images.DEFAULT_TEST_FRACTION,
                hub_offline=None, image_column=None, label_column=None, classes=None, mode=None,
                image_size=None, stats_sample=DEFAULT_STATS_SAMPLE, limit=None, statistics=True,
                progress: Optional[Progress] = None) -> StreamData:
    """Open an image dataset as streams (see the module's docstring for order, splits, statistics).

    source: as for images.load_images: a hub name ('mnist', 'cifar10', 'imagenette', ...), 'hf:owner/
    name[:config]', a parquet/arrow/csv/jsonl file or folder of them, an image folder, or a
    save_to_disk folder; not IDX folders or 'digits' (held in memory).
    val_fraction, test_fraction: carve every round(1 / fraction)-th example (see above).
    stats_sample: training images the normalisation statistics are computed on.
    limit: keep only the first `limit` training examples (source order).
    statistics: False skips the statistics pass (mean, std and image_shape are None), e.g. to
        evaluate a run that stored them.
    progress: called as progress(stage, done, total) while rows are counted (total None: unknown)
    and while the statistics are computed.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction={val_fraction!r} is outside [0, 1); use e.g. 0.1")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction={test_fraction!r} is outside (0, 1); use e.g. 0.2")
    if int(stats_sample) < 1:
        raise ValueError(f"stats_sample={stats_sample!r} must be at least 1 image")
    if limit is not None and int(limit) < 1:
        raise ValueError(f"limit={limit!r} must be at least 1, or None for all")
    why = streamable(source)
    if why:
        raise ValueError(why)
    _image_io.check_mode(mode)
    size = _images._check_size(image_size)
    columns = dict(image_column=image_column, label_column=label_column)

    name = _images._dataset_name(source)
    if name is not None or str(source).startswith("hf:"):
        hub_name, spec = (name, _images.DATASETS[name]) if name else _images._hf_spec(str(source))
        dd = load_hub_dataset(hub_name, spec, streaming=True, hub_offline=hub_offline)
        mode, size = mode or spec.mode, size or _images._check_size(spec.image_size)
        what = spec.repo
        sources, names = _hf_sources(dd, what, **columns)
        short = hub_name
        origin = f"hf:{spec.repo}" + (f":{spec.config}" if spec.config else "")
    else:
        sources, names, short, origin = _path_sources(source, **columns)
    notes = [f"streamed: splits read as streams, never held in memory"]
    for split in list(sources):
        if split not in ("train", "validation", "test"):
            notes.append(f"split {split!r} of {origin} left out")
            sources.pop(split)
    if "train" not in sources:
        raise ValueError(f"{origin} has no training split (its splits: "
                         f"{', '.join(sources) or 'none'}); name the training files or split 'train'")

    need_labels = classes is None and names is None
    found = set()
    for split, src in sources.items():
        if src.shards is None or need_labels:
            _scan(src, found, progress)
    names, label_index = _class_names(classes, names, found, origin)

    carving, test_from, val_from = _carving(sources, val_fraction, test_fraction, limit, notes)
    decoder = _Decoder(names, label_index, mode, size)
    streams = {split: _as_stream(src) for split, src in sources.items()}
    splits = {}
    for split, src in sources.items():
        n = sum(c for _, c in src.shards)
        if n == 0:
            raise ValueError(f"{src.what} is empty (no rows); add images or point at another split")
        if split == "train":
            sizes = carving.sizes(n)
            for part, count in sizes.items():
                ds = streams[split].filter(_Keep(carving, part), input_columns=["index"])
                label = src.what if part == "train" else f"{src.what} (carved {part} split)"
                splits[part] = StreamSplit(part, ds, count, label, decoder, src.base_dir, src)
            # the statistics see the training split before --limit, as in the in-memory path
            unlimited = _Carving(carving.test_every, carving.val_every)
            stats_split = StreamSplit(
                "train", streams[split].filter(_Keep(unlimited, "train"), input_columns=["index"]),
                unlimited.sizes(n)["train"], src.what, decoder, src.base_dir, src)
        elif (split == "test" and test_from == "test") or (split == "validation"
                                                           and val_from == "validation"):
            splits[split] = StreamSplit(split, streams[split], n, src.what, decoder, src.base_dir,
                                        src)
        elif split == "validation" and test_from == "validation":
            splits["test"] = StreamSplit("test", streams[split], n, src.what, decoder,
                                         src.base_dir, src)
    if splits["train"].count == 0:
        raise ValueError(f"no training images are left after carving val_fraction={val_fraction:g}"
                         f" and test_fraction={test_fraction:g}; lower the fractions")
    if "validation" not in splits:   # val_fraction 0
        splits["validation"] = StreamSplit("validation", streams["train"].take(0), 0,
                                           "no validation split", decoder,
                                           source=sources["train"])
    mean = std = None
    used = 0
    if statistics:
        mean, std, used = _stream_stats(stats_split, int(stats_sample), progress)
    return StreamData(train=splits["train"], val=splits["validation"], test=splits["test"],
                      classes=names, name=short, source=origin, mean=mean, std=std,
                      image_shape=_shape_of(decoder.key) if decoder.key else None,
                      stats_images=used, notes=notes)


def _shape_of(key):
    kind, (h, w) = key
    return int(kind.split("x")[1]), int(h), int(w)


def _carving(sources, val_fraction, test_fraction, limit, notes):
    """(carving of the source's train split, where test comes from, where validation comes from)."""
    test_every = val_every = 0
    if "test" in sources:
        test_from = "test"
        val_from = "validation" if "validation" in sources else None
    elif "validation" in sources:
        test_from, val_from = "validation", None
        notes.append("the source's validation split is used as the test split")
    else:
        test_from, val_from = "train", None
        test_every = max(2, int(round(1 / test_fraction)))
        notes.append(f"test split: every {test_every}th example of the data (index % "
                     f"{test_every} == 0)")
    if val_from is None and val_fraction > 0:
        val_every = max(2, int(round(1 / val_fraction)))
        notes.append(f"validation split: every {val_every}th remaining training example")
    return _Carving(test_every, val_every, limit), test_from, val_from


def _scan(src, found, progress):
    """One pass over a source's label column: the rows of each shard, and the labels seen."""
    counts, done = [], 0
    stage = f"counting the rows of {src.what}"
    for key in src.keys:
        n = 0
        for _, label in src.read_labels(key):
            if label is not None:
                found.add(label)
            n += 1
            done += 1
            if progress is not None and done % 4096 == 0:
                progress(stage, done, None)
        counts.append(n)
    if progress is not None:
        progress(stage, done, None)
    src.shards = list(zip(src.keys, counts))


def _class_names(classes, names, found, origin):
    """(class names, {name: id} when labels are strings, else None)."""
    strings = any(isinstance(v, str) for v in found)
    if classes is not None:
        names = [str(c) for c in classes]
        return names, ({n: i for i, n in enumerate(names)} if strings else None)
    if names is not None:
        return list(names), None
    if not found:
        raise ValueError(f"{origin} has no labels; label the images")
    if strings:
        if not all(isinstance(v, str) for v in found):
            raise ValueError(f"{origin} mixes string and numeric labels; use one type of label")
        names = sorted(found)
        return names, {n: i for i, n in enumerate(names)}
    top = max(int(v) for v in found)
    return [str(i) for i in range(top + 1)], None


def _stream_stats(train, sample, progress):
    """Channel statistics of the first `sample` training images, in source order, in blocks."""
    acc = _transforms.ChannelStats()
    want = min(sample, train.count)
    it = itertools.islice(train.rows(), want)
    done, block = 0, 1
    stage = "normalisation statistics"
    while done < want:
        rows = list(itertools.islice(it, block))
        if not rows:
            break
        x, _ = train.decode(rows)
        if done == 0:   # from the first image on, blocks of a bounded size
            per_image = int(np.prod(x.shape[1:]))
            block = max(1, min(STATS_BLOCK_IMAGES, STATS_BLOCK_VALUES // per_image))
            first = x
            rows = list(itertools.islice(it, block - 1))
            x = np.concatenate([first, train.decode(rows)[0]]) if rows else first
        acc.add(x)
        done += len(x)
        if progress is not None:
            progress(stage, done, want)
    mean, std = acc.result()
    return mean, std, done


def _hf_sources(dd, what, *, image_column, label_column):
    """{split: source} and class names (or None) for a DatasetDict or IterableDatasetDict."""
    import datasets
    out, names = {}, None
    for split_name in dd:
        split = _images._HF_SPLITS.get(split_name.lower(), split_name)
        if split in out:
            continue
        ds = dd[split_name]
        label_what = f"the {split_name} split of {what}"
        src, split_names = _source_of(ds, label_what, image_column, label_column)
        if isinstance(ds, datasets.IterableDataset) and src.shards is None:
            info = ds.info.splits.get(split_name) if ds.info and ds.info.splits else None
            if info is not None and info.num_examples and ds.n_shards == 1:
                src.shards = [(0, int(info.num_examples))]
        out[split] = src
        names = names or split_names
    return out, names


def _source_of(ds, what, image_column, label_column, counts=None, base_dir=None):
    import datasets
    features = ds.features
    columns = list(features) if features is not None else list(next(iter(ds)).keys())
    image, label = _images._pick_columns(columns, features, image_column, label_column, what)
    if isinstance(image, list):
        raise ValueError(f"{what} stores one column per pixel; such tables are read whole: drop "
                         f"--stream")
    names = None
    if features is not None and isinstance(features.get(label), datasets.ClassLabel):
        names = list(features[label].names)
    if features is not None and isinstance(features.get(image), datasets.Image):
        ds = ds.cast_column(image, datasets.Image(decode=False))
    if isinstance(ds, datasets.IterableDataset):
        return _IterableSource(ds, image, label, what, counts, base_dir), names
    return _TableSource(ds, image, label, what), names


def _path_sources(source, *, image_column, label_column):
    """({split: source}, class names or None, short name, origin) for a local path."""
    text = str(source)
    path = Path(os.path.expanduser(text))
    if not path.exists():
        _images._read_path(source, image_column=None, label_column=None, mode=None, size=None,
                           max_examples=None, seed=0, progress=None)  # raises the usual error
    path = path.resolve()
    if path.is_file():
        fmt = _images._TABLE_FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise ValueError(_images._unsupported_file(path))
        sources, names = _table_sources(path, {"train": [path]}, fmt, image_column, label_column)
        return sources, names, path.stem, f"{path} ({fmt})"
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        import datasets
        with local_mode():
            loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.Dataset):
            loaded = datasets.DatasetDict({"train": loaded})
        sources, names = _hf_sources(loaded, str(path), image_column=image_column,
                                     label_column=label_column)
        return sources, names, path.name, f"{path} (datasets save_to_disk)"
    tables = _images._find_tables(path)
    if tables is not None:
        fmt, files = tables
        sources, names = _table_sources(path, files, fmt, image_column, label_column)
        return sources, names, path.name, f"{path} ({fmt})"
    layout = _image_io.image_folder_layout(path)
    if layout is not None:
        _image_io.require_pillow("image folders")
        classes = sorted({c for by_class in layout.values() for c in by_class})
        index = {c: i for i, c in enumerate(classes)}
        sources = {}
        for split, by_class in layout.items():
            files = [(str(f), index[c]) for c in sorted(by_class) for f in by_class[c]]
            sources[split] = _FileSource(files, f"the {split} images of {path}")
        return sources, classes, path.name, f"{path} (image folder)"
    raise ValueError(_images._unsupported_dir(path))


def _table_sources(path, files, fmt, image_column, label_column):
    import datasets
    files = {split: [f for f in fs if not _images._empty_table(f, fmt)]
             for split, fs in files.items()}
    files = {split: fs for split, fs in files.items() if fs}
    if "train" not in files:
        raise ValueError(f"{str(path)!r} is empty (no rows of training data); add images")
    data_files = {split: [str(f) for f in fs] for split, fs in files.items()}
    options = {}
    if fmt == "parquet":
        # pyarrow's default pre-buffering reads up to 32 MiB of a file at once (it saves round
        # trips to remote storage); local files are read one column chunk at a time instead
        import pyarrow.dataset as pds
        options["fragment_scan_options"] = pds.ParquetFragmentScanOptions(pre_buffer=False)
    with local_mode():
        try:
            dd = datasets.load_dataset(fmt, data_files=data_files, streaming=True,
                                       cache_dir=datasets_cache_dir(), **options)
        except Exception as e:  # the builders raise many types for malformed files
            if isinstance(e, (ImportError, MemoryError, KeyboardInterrupt)):
                raise
            raise ValueError(f"cannot read {str(path)!r} as {fmt} ({type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''}); check the file's "
                             f"format") from None
    sources, names = {}, None
    for split_name, fs in files.items():
        ds = dd[split_name]
        counts = None
        if fmt == "parquet" and ds.n_shards == len(fs):
            import pyarrow.parquet as pq
            counts = [pq.ParquetFile(f).metadata.num_rows for f in fs]   # footers only
        what = f"the {split_name} split of {path}"
        src, split_names = _source_of(ds, what, image_column, label_column, counts,
                                      base_dir=str(Path(fs[0]).parent))
        sources[split_name] = src
        names = names or split_names
    return sources, names
