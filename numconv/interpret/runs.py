"""A saved run opened for interpretation: its model, how inputs are prepared for it, its training
images, and image files checked against what the run was trained on."""
import os
from dataclasses import dataclass, field

import numpy as np

from numconv import models
from numconv.train.checkpoint import CheckpointError, checkpoint_path

# A streamed run's training split does not fit in memory: the commands that search it (neighbors)
# read at most this many bytes of its decoded images, from the start of the stream.
STREAM_SAMPLE_BYTES = 512 * 2**20


@dataclass
class OpenRun:
    run_dir: str
    cfg: dict
    model: object
    checkpoint: str                 # the file the weights came from
    _data: object = field(default=None, repr=False)
    note: str = None                # set when only part of a streamed training split was read

    @property
    def input_shape(self):
        return tuple(int(s) for s in self.cfg["input_shape"])

    @property
    def mean(self):
        return np.asarray(self.cfg["mean"], np.float32)

    @property
    def std(self):
        return np.asarray(self.cfg["std"], np.float32)

    @property
    def classes(self):
        return list(self.cfg["classes"])

    def prepare(self, x):
        """Stored images (N, C, h, w) -> normalised model inputs (N, C', H, W), as in training."""
        from numconv.data.images import preprocess
        C, H, W = self.input_shape
        return preprocess(x, input_size=(H, W), mean=self.mean, std=self.std, channels=C)

    def black(self):
        """The normalised value of a black pixel, per input channel: (C,)."""
        C = self.input_shape[0]
        mean = np.resize(self.mean, C)
        std = np.resize(self.std, C)
        return (0.0 - mean) / np.where(std < 1e-6, 1.0, std)

    def training_split(self):
        """The training images the run saw (the same `limit`): a numconv.data.images.Split."""
        if self._data is None:
            from numconv.data.images import Split
            if self.cfg.get("stream") and not self.cfg.get("note"):
                self._data = self._streamed_training_sample()
                return self._data
            from numconv.train.image import run_data
            data = run_data(self.cfg)
            train = data.train
            if self.cfg.get("limit"):
                keep = slice(0, min(int(self.cfg["limit"]), len(train.y)))
                train = Split(train.x[keep], train.y[keep])
            self._data = train
        return self._data

    def _streamed_training_sample(self):
        """The first training images of a streamed run, in source order, as many as fit in
        STREAM_SAMPLE_BYTES (all of them when they fit); says so in `note` when cut."""
        import itertools

        from numconv.data import streaming
        from numconv.data.images import Split
        train = streaming.open_stream(self.cfg["dataset"], val_fraction=self.cfg["val_fraction"],
                                      limit=self.cfg.get("limit"), statistics=False).train
        rows = train.rows()
        first = list(itertools.islice(rows, 1))
        if not first:
            raise ValueError(f"the training stream of {self.cfg['dataset']} is empty")
        x0, y0 = train.decode(first)
        per_image = max(1, x0[0].nbytes)
        n = min(len(train), max(1, STREAM_SAMPLE_BYTES // per_image))
        xs, ys = [x0], [y0]
        remaining = n - 1
        while remaining > 0:
            chunk = list(itertools.islice(rows, min(remaining, 1024)))
            if not chunk:
                break
            x, y = train.decode(chunk)
            xs.append(x)
            ys.append(y)
            remaining -= len(chunk)
        split = Split(np.concatenate(xs), np.concatenate(ys))
        if len(split.y) < len(train):
            self.note = (f"streamed run: searched the first {len(split.y):,} of its "
                         f"{len(train):,} training images (as many as fit in "
                         f"{STREAM_SAMPLE_BYTES // 2**20} MiB)")
        return split


def open_run(run_dir, which="best"):
    """Open an image run; CheckpointError (one line) for a directory without a model."""
    from numconv.train.runs import load_run
    run_dir = str(run_dir)
    cfg_path = os.path.join(run_dir, "config.json")
    if os.path.isdir(run_dir) and os.path.exists(cfg_path):
        import json
        try:
            with open(cfg_path) as f:
                doc = json.load(f)
        except ValueError:
            doc = {}
        if doc.get("model") not in models.MODELS or "input_shape" not in doc:
            raise CheckpointError(f"{run_dir} is not an image run (model {doc.get('model')!r}); "
                                  f"these commands read runs of numconv train-image")
    cfg, model = load_run(run_dir, which)
    path = checkpoint_path(run_dir, which)
    if not os.path.exists(path):
        path = checkpoint_path(run_dir, "last")
    return OpenRun(run_dir, cfg, model, path)


_MODE = {1: "greyscale (mode L)", 3: "RGB"}


def load_images_for(run, paths, data_size=None):
    """Image files -> (stored uint8/float (N, C, h, w), model inputs (N, C, H, W)).

    Every image must have the run's channel count (greyscale for 1, RGB for 3) and either the
    model's input size or the training images' size (`data_size`, or a callable giving it, asked
    only when an image does not have the input size). ValueError naming the file and the fix."""
    from numconv.data import _image_io
    C, H, W = run.input_shape
    arrays = []
    for path in paths:
        path = str(path)
        if not os.path.isfile(path):
            raise ValueError(f"image file {path!r} does not exist; check the path")
        arr = _image_io.to_chw(path, f"image {path!r}")
        if arr.shape[0] != C:
            raise ValueError(f"image {path!r} is {_MODE.get(arr.shape[0], f'{arr.shape[0]}-channel')}"
                             f" but run {run.run_dir} takes {_MODE.get(C, f'{C}-channel')} images; "
                             f"convert it (PIL: Image.open(path).convert("
                             f"'{'L' if C == 1 else 'RGB'}'))")
        size = tuple(arr.shape[1:])
        if size != (H, W):
            allowed = data_size() if callable(data_size) else data_size
            if allowed is None or size != tuple(allowed):
                sizes = f"{H}x{W} (the model's input)"
                if allowed is not None and tuple(allowed) != (H, W):
                    sizes += f" or {allowed[0]}x{allowed[1]} (the training images)"
                raise ValueError(f"image {path!r} is {size[0]}x{size[1]} but run {run.run_dir} "
                                 f"takes {sizes}; resize it")
        arrays.append(arr)
    if not arrays:
        raise ValueError("no image files given; pass at least one path")
    if len({a.shape for a in arrays}) > 1 or len({a.dtype for a in arrays}) > 1:
        # Mixed sizes are both allowed ones; prepare them one by one.
        inputs = np.concatenate([run.prepare(a[None]) for a in arrays])
        return arrays, inputs
    stored = np.stack(arrays)
    return list(stored), run.prepare(stored)
