"""`numconv train-image` as a library call: resolve the configuration from the model's recipe and
the user's overrides, load the data, build the model, train with `numconv.train.loop.fit`, and
write the test report.

Data is held in memory (`numconv.data.images`), or streamed (`numconv.data.streaming`) with
`stream=True`, or automatically when a local source's files take more than AUTO_STREAM_FRACTION of
the machine's memory. A streamed run never holds a split: training batches come from datasets'
seeded shuffle buffer, validation and test are evaluated batch by batch, and a resumed run skips
the rows its interrupted epoch had already used.

With device='cuda' the model lives on the GPU (`Module.to`): each step moves its batch in and the
loss and the count of correct answers out; evaluation copies back only each batch's logits.
Checkpoints are host arrays, so a run resumes, evaluates and predicts on either device.

Run directory:
  config.json           the resolved configuration (what was asked and what was used)
  metrics.jsonl         one JSON line per epoch
  checkpoints/last.npz  everything needed to resume; checkpoints/best.npz best validation accuracy
  report.json           test top-1/top-5 error and confusion matrix of the best checkpoint
"""
import os
from dataclasses import asdict, dataclass, field

import numpy as np

from numconv import models
from numconv.nn import SoftmaxCrossEntropy
from numconv.nn.device import forward_to_host, move_model, to_device
from numconv.ops import nn as F
from numconv.optim import Schedule, make_optimizer
from numconv.train import loop
from numconv.train.checkpoint import (CheckpointError, atomic_write_json, checkpoint_path,
                                      load_checkpoint, prepare_run_dir, removed_if_unstarted,
                                      restore_training_state)

DEFAULT_MODEL = "lenet5"
DEFAULT_DATASET = "mnist"
# With stream=None, a local source whose files take more than this share of physical memory is
# streamed (decoded images are at least as large as their files).
AUTO_STREAM_FRACTION = 0.25


@dataclass
class ImageConfig:
    model: str = DEFAULT_MODEL
    dataset: str = DEFAULT_DATASET
    epochs: int = None
    batch_size: int = None
    optimizer: str = None
    lr: float = None
    momentum: float = None
    nesterov: bool = None
    weight_decay: float = None
    schedule: str = None
    step_size: int = None
    gamma: float = None
    warmup_epochs: float = None
    milestones: list = None
    lr_values: list = None
    factor: float = None
    patience: int = None
    crop_padding: int = None
    flip: bool = None
    label_smoothing: float = None
    width: float = 1.0
    input_size: int = None
    classic: bool = False
    aux: bool = False
    device: str = None            # cpu, cuda or auto; None: cpu (a resumed run: its own device)
    threads: int = None
    seed: int = 0
    val_fraction: float = 0.1
    limit: int = None             # use only the first `limit` training images (quick runs)
    stream: bool = None           # True: stream the data; False: load it whole; None: automatic
    shuffle_buffer: int = None    # streamed runs: rows in the shuffle buffer (0: source order)
    stats_sample: int = None      # streamed runs: training images the statistics are taken from
    run_dir: str = "runs/latest"
    recipe: dict = field(default_factory=dict)

    def resolve(self):
        """Fill every unset option from the model's published recipe."""
        if self.model not in models.MODELS:
            raise ValueError(f"model {self.model!r} is unknown; choose one of "
                             f"{', '.join(sorted(models.MODELS))}")
        rec = models.recipe(self.model, classic=self.classic)
        self.recipe = dict(rec)
        if self.lr is not None and self.lr_values is None and rec.get("lr_values"):
            # A user's --lr rescales the recipe's piecewise rates rather than fighting them.
            self.lr_values = [v * self.lr / rec["lr_values"][0] for v in rec["lr_values"]]
        for key in ("epochs", "batch_size", "optimizer", "lr", "momentum", "nesterov",
                    "weight_decay", "schedule", "step_size", "gamma", "warmup_epochs",
                    "milestones", "lr_values", "factor", "patience",
                    "crop_padding", "flip", "label_smoothing"):
            if getattr(self, key) is None:
                setattr(self, key, rec.get(key, _FALLBACK[key]))
        for key, lo in (("epochs", 1), ("batch_size", 1)):
            if getattr(self, key) < lo:
                raise ValueError(f"--{key.replace('_', '-')} must be >= {lo}, got "
                                 f"{getattr(self, key)}")
        if not self.lr > 0:
            raise ValueError(f"--lr must be > 0, got {self.lr}")
        if not self.width > 0:
            raise ValueError(f"--width must be > 0, got {self.width}")
        self.device = resolve_run_device(self.device)
        for key in ("shuffle_buffer", "stats_sample"):
            value = getattr(self, key)
            if value is not None and value < (0 if key == "shuffle_buffer" else 1):
                raise ValueError(f"--{key.replace('_', '-')} must be >= "
                                 f"{0 if key == 'shuffle_buffer' else 1}, got {value}")
        return self


_FALLBACK = dict(epochs=10, batch_size=64, optimizer="sgd", lr=0.01, momentum=0.9,
                 nesterov=False, weight_decay=0.0, schedule="constant", step_size=30, gamma=0.1,
                 warmup_epochs=0.0, milestones=None, lr_values=None, factor=0.1, patience=5,
                 crop_padding=0, flip=False, label_smoothing=0.0)


def resolve_run_device(device):
    """None -> 'cpu'; 'auto' -> 'cuda' where a GPU is usable, else 'cpu'; others checked."""
    from numconv.ops._device import cuda_unavailable_reason, resolve_device
    device = resolve_device(device or "cpu")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"--device {device!r} is unknown; use cpu, cuda or auto")
    if device == "cuda" and cuda_unavailable_reason() is not None:
        # e.g. a run trained on a GPU, resumed (it keeps its device) on a machine without one
        raise RuntimeError(f"device cuda: CUDA is not usable here: {cuda_unavailable_reason()}; "
                           f"use --device cpu (checkpoints load on either device)")
    return device


def model_options(model, classic=False, aux=False):
    """The model-specific switches, checked: --classic is LeNet-5's, --aux GoogLeNet's."""
    opts = {}
    if classic:
        if model != "lenet5":
            raise ValueError(f"--classic applies to lenet5 only, not {model}")
        opts["classic"] = True
    if aux:
        if model != "googlenet":
            raise ValueError(f"--aux applies to googlenet only, not {model}")
        opts["aux"] = True
    return opts


class EpochBatches:
    """The batches of one epoch as an indexable sequence: batch i is a pure function of (seed,
    epoch, i), so a resumed run can start at any batch."""

    def __init__(self, split, batch_size, seed, epoch, prepare, shuffle=True, augment=True):
        self.split, self.batch_size, self.prepare, self.augment = split, batch_size, prepare, augment
        n = len(split.y)
        rng = np.random.default_rng([seed, epoch, 0])
        self.order = rng.permutation(n) if shuffle else np.arange(n)
        self.seed, self.epoch = seed, epoch

    def __len__(self):
        return -(-len(self.order) // self.batch_size)

    def __getitem__(self, i):
        if not 0 <= i < len(self):
            raise IndexError(i)
        idx = self.order[i * self.batch_size:(i + 1) * self.batch_size]
        rng = np.random.default_rng([self.seed, self.epoch, i + 1])
        return self.prepare(self.split, idx, rng, self.augment)


def _load_dataset(cfg, load_data=None, progress=None):
    """The run's data: the named source, or (for a hub name that cannot be reached) the embedded
    fallback, with a one-line note saying so. `limit` keeps the first training images."""
    from numconv.data import images as data
    if load_data is not None:
        dataset, note = load_data(cfg.dataset, val_fraction=cfg.val_fraction, seed=cfg.seed)
    elif cfg.dataset == DEFAULT_DATASET:
        dataset, note = data.load_images_or_fallback(cfg.dataset, val_fraction=cfg.val_fraction,
                                                     seed=cfg.seed, progress=progress)
    else:
        dataset, note = data.load_images(cfg.dataset, val_fraction=cfg.val_fraction,
                                         seed=cfg.seed, progress=progress), None
    if cfg.limit:
        if cfg.limit < 1:
            raise ValueError(f"--limit must be >= 1, got {cfg.limit}")
        keep = slice(0, min(cfg.limit, len(dataset.train.y)))
        dataset.train = data.Split(dataset.train.x[keep], dataset.train.y[keep])
    return dataset, note


def _memory_bytes():
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def decide_stream(cfg):
    """(stream: bool, note or None). cfg.stream None: stream a local source whose files take more
    than AUTO_STREAM_FRACTION of physical memory; hub names are streamed only when asked."""
    if cfg.stream is not None:
        return bool(cfg.stream), None
    from numconv.data import streaming
    if streaming.streamable(cfg.dataset) is not None:
        return False, None
    size, memory = streaming.estimated_bytes(cfg.dataset), _memory_bytes()
    if size is None or memory is None or size <= AUTO_STREAM_FRACTION * memory:
        return False, None
    return True, (f"streaming {cfg.dataset}: its files take {size / 2**30:.1f} GiB, more than "
                  f"{AUTO_STREAM_FRACTION:.0%} of this machine's {memory / 2**30:.1f} GiB memory "
                  f"(--no-stream loads it whole)")


def _open_stream(cfg, progress=None):
    """The run's data as streams; for the default hub dataset unreachable, the in-memory fallback.
    -> (data, note, streamed)."""
    from numconv.data import HubUnavailable
    from numconv.data import streaming
    try:
        data = streaming.open_stream(cfg.dataset, val_fraction=cfg.val_fraction, limit=cfg.limit,
                                     stats_sample=cfg.stats_sample, progress=progress)
        return data, None, True
    except HubUnavailable:
        if cfg.dataset != DEFAULT_DATASET:
            raise
    dataset, note = _load_dataset(cfg, progress=progress)
    return dataset, note + " (held in memory, not streamed)", False


def _predict_logits(model, split, prepare, batch_size):
    outs = []
    for start in range(0, len(split.y), batch_size):
        idx = np.arange(start, min(len(split.y), start + batch_size))
        x, _ = prepare(split, idx, None, False)
        outs.append(forward_to_host(model, x))
    return np.concatenate(outs) if outs else np.zeros((0, 1), np.float32)


def make_preparer(spec):
    """prepare(split, idx, rng, augment) -> (x, y): a batch fitted to the model's input and
    normalised with the training statistics; augmented only when `augment`."""
    from numconv.data import images as data

    def prepare(split, idx, rng, augment):
        return data.make_batch(split, idx, rng=rng if augment else None,
                               input_size=spec["input_size"], mean=spec["mean"], std=spec["std"],
                               channels=spec["channels"],
                               crop_padding=spec["crop_padding"] if augment else 0,
                               flip=bool(spec["flip"]) and augment)
    return prepare


def evaluate_split(model, split, prepare, batch_size, loss_fn):
    model.eval()
    logits = _predict_logits(model, split, prepare, batch_size)
    loss, _ = loss_fn(logits, split.y)
    acc = float(np.mean(np.argmax(logits, axis=1) == split.y))
    return {"loss": float(loss), "acc": acc}, logits


def evaluate_stream(model, split, prepare, batch_size, loss_fn, num_classes):
    """evaluate_split and loop.classification_report for a streamed split, batch by batch: nothing
    grows with the split but the confusion matrix. -> (metrics {'loss', 'acc'}, report).

    The loss is the mean of per-batch means weighted by batch size, so it can differ from
    evaluate_split's in the last bits; counts, accuracy, top-5 and the confusion matrix are exact."""
    model.eval()
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    loss_sum, top5, n = 0.0, 0, 0
    for x, y in split.batches(batch_size):
        xb, yb = prepare((x, y), np.arange(len(y)), None, False)
        logits = forward_to_host(model, xb)
        loss, _ = loss_fn(logits, yb)
        loss_sum += float(loss) * len(yb)
        order = np.argsort(-logits, axis=1, kind="stable")
        k = min(5, logits.shape[1])
        top5 += int((order[:, :k] == yb[:, None]).any(axis=1).sum())
        np.add.at(confusion, (yb, order[:, 0]), 1)
        n += len(yb)
    correct = int(np.trace(confusion))
    acc = correct / n if n else float("nan")
    metrics = {"loss": loss_sum / n if n else float("nan"), "acc": acc}
    # the same expressions as loop.classification_report, so the numbers agree to the bit
    report = {"count": n, "top1_error": (n - correct) / n if n else float("nan"),
              "top5_error": 1 - top5 / n if n else float("nan"), "accuracy": acc,
              "confusion_matrix": confusion.tolist()}
    return metrics, report


def train_image(cfg, callbacks=None, resume=False, load_data=None, stop_flag=None, progress=None):
    """Train (or resume) an image run. Returns a summary dict.

    progress(stage, done, total) reports data loading (total None when unknown). A run that
    fails before it has written its configuration (an unknown model, a bad dataset, an input
    too small) removes the run directory it created: nothing is left half-way."""
    with removed_if_unstarted(cfg.run_dir, resume):
        return _train_image(cfg, callbacks, resume, load_data, stop_flag, progress)


def _train_image(cfg, callbacks, resume, load_data, stop_flag, progress):
    cb = callbacks or loop.Callbacks()
    run_dir = prepare_run_dir(cfg.run_dir, resume=resume)
    state = None
    device = cfg.device
    if resume:
        saved = os.path.join(run_dir, "config.json")
        if not os.path.exists(saved):
            raise CheckpointError(f"{run_dir} has no config.json: not a numconv run directory")
        import json
        with open(saved) as f:
            stored = json.load(f)
        threads = cfg.threads
        cfg = ImageConfig(**{k: v for k, v in stored.items() if k in ImageConfig.__annotations__})
        cfg.run_dir = run_dir
        if device is not None:   # where to run is the caller's choice; the stored one by default
            cfg.device = device
        if threads is not None:  # so is the thread count (it changes no result)
            cfg.threads = threads
        model_state, optim_state, sched_state, meta = load_checkpoint(checkpoint_path(run_dir))
        state = loop.TrainState.from_meta(meta)
    cfg.resolve()
    if device == "auto":
        cb.call("message", f"--device auto: training on {cfg.device}")
    if resume and stored.get("device") != cfg.device:   # config.json: where it trains now
        stored["device"] = cfg.device
        atomic_write_json(os.path.join(run_dir, "config.json"), stored)
    if cfg.threads:
        import numba
        numba.set_num_threads(min(cfg.threads, numba.config.NUMBA_NUM_THREADS))

    streamed, auto_note = decide_stream(cfg)
    if auto_note:
        cb.call("message", auto_note)
    if streamed and load_data is None:
        from numconv.data import streaming
        cfg.shuffle_buffer = (streaming.DEFAULT_SHUFFLE_BUFFER if cfg.shuffle_buffer is None
                              else cfg.shuffle_buffer)
        cfg.stats_sample = cfg.stats_sample or streaming.DEFAULT_STATS_SAMPLE
        dataset, note, streamed = _open_stream(cfg, progress)
    else:
        dataset, note = _load_dataset(cfg, load_data, progress)
        streamed = False
    cfg.stream = streamed
    if note:
        cb.call("message", note)
    for line in dataset.notes:
        cb.call("message", line)
    C, H, W = models.default_input(cfg.model)
    if cfg.input_size:
        H = W = cfg.input_size
    channels = C
    model = models.build_model(cfg.model, num_classes=len(dataset.classes), in_channels=channels,
                               input_size=(H, W), width=cfg.width, seed=cfg.seed,
                               **model_options(cfg.model, cfg.classic, cfg.aux))
    model.skip_input_gradient()
    # before the optimiser is made: it updates the arrays it is given, wherever they live
    move_model(model, cfg.device)
    spec = dict(input_size=(H, W), channels=channels, mean=dataset.mean, std=dataset.std,
                crop_padding=cfg.crop_padding, flip=cfg.flip)

    prepare = make_preparer(spec)

    loss_fn = SoftmaxCrossEntropy(cfg.label_smoothing)
    optimizer = make_optimizer(cfg.optimizer, model.named_parameters(), cfg.lr, cfg.momentum,
                               cfg.nesterov, cfg.weight_decay)
    schedule = Schedule(cfg.schedule, cfg.lr, cfg.epochs, step_size=cfg.step_size,
                        gamma=cfg.gamma, factor=cfg.factor, patience=cfg.patience,
                        warmup_epochs=cfg.warmup_epochs, milestones=cfg.milestones or (),
                        lr_values=cfg.lr_values if cfg.schedule == "multistep" else None)
    if resume:
        restore_training_state(run_dir, model, optimizer, schedule, model_state, optim_state,
                               sched_state)
    config_doc = dict(asdict(cfg), dataset_name=dataset.name, dataset_source=dataset.source,
                      classes=list(dataset.classes),
                      input_shape=[channels, H, W], parameters=int(model.num_parameters()),
                      mean=[float(v) for v in np.ravel(dataset.mean)],
                      std=[float(v) for v in np.ravel(dataset.std)], note=note,
                      fallback_reason=getattr(dataset, "fallback_reason", None),
                      split_sizes={"train": len(dataset.train), "val": len(dataset.val),
                                   "test": len(dataset.test)})
    if streamed:
        config_doc["stats_images"] = dataset.stats_images
    if not resume:
        atomic_write_json(os.path.join(run_dir, "config.json"), config_doc)

    on_gpu = cfg.device == "cuda"

    def step_fn(model_, batch):
        x, y = batch
        if on_gpu:
            x = to_device(x)      # the batch goes in; the loss and the count of correct come out
        logits = model_.forward(x)
        loss, dlogits = loss_fn(logits, y)
        aux, aux_grads = models.aux_loss(model_, loss_fn, y)   # GoogLeNet's auxiliary heads
        if aux_grads:
            model_.backward(dlogits, aux_grads=aux_grads)
        else:
            model_.backward(dlogits)
        return loss + aux, F.count_correct(logits, y), len(y)

    eval_bs = max(cfg.batch_size, 256)
    if streamed:
        from numconv.data.streaming import StreamBatches

        def batches_for_epoch(e):
            return StreamBatches(dataset.train, cfg.batch_size, seed=cfg.seed, epoch=e,
                                 prepare=prepare, shuffle_buffer=cfg.shuffle_buffer)

        def evaluate(m):
            return evaluate_stream(m, dataset.val, prepare, eval_bs, loss_fn,
                                   len(dataset.classes))[0]
    else:
        def batches_for_epoch(e):
            return EpochBatches(dataset.train, cfg.batch_size, cfg.seed, e, prepare)

        def evaluate(m):
            return evaluate_split(m, dataset.val, prepare, eval_bs, loss_fn)[0]
    state, finished = loop.fit(
        model, optimizer, schedule, epochs=cfg.epochs, batches_for_epoch=batches_for_epoch,
        step_fn=step_fn, evaluate=evaluate,
        run_dir=run_dir, state=state, callbacks=cb, stop_flag=stop_flag,
        extra_meta={"kind": "image", "model": cfg.model})
    summary = {"run_dir": run_dir, "model": cfg.model, "finished": finished,
               "epochs_done": state.epoch,
               "best_val_acc": state.best_val_score, "best_epoch": state.best_epoch,
               "dataset": dataset.source, "history": state.history, "streamed": streamed}
    if finished:
        report = test_report(run_dir, model, dataset.test, prepare, eval_bs, loss_fn,
                             dataset.classes)
        summary["test"] = report
    return summary


def test_report(run_dir, model, split, prepare, batch_size, loss_fn, classes):
    """Evaluate the best checkpoint on the untouched test split; write report.json."""
    best = checkpoint_path(run_dir, "best")
    if os.path.exists(best):
        model.load_state_dict(load_checkpoint(best)[0])
    report = _report(model, split, prepare, batch_size, loss_fn, classes)
    atomic_write_json(os.path.join(run_dir, "report.json"), report)
    return report


def _report(model, split, prepare, batch_size, loss_fn, classes):
    if hasattr(split, "batches"):   # a stream
        metrics, report = evaluate_stream(model, split, prepare, batch_size, loss_fn, len(classes))
    else:
        metrics, logits = evaluate_split(model, split, prepare, batch_size, loss_fn)
        report = loop.classification_report(logits, split.y, len(classes))
    report.update(loss=metrics["loss"], classes=list(classes))
    return report


def run_data(cfg_doc):
    """Reload the data a run trained on (the fallback's name when it fell back), same splits."""
    from numconv.data import images as data
    name = cfg_doc.get("dataset_name") if cfg_doc.get("note") else cfg_doc["dataset"]
    return data.load_images(name or cfg_doc["dataset"], val_fraction=cfg_doc["val_fraction"],
                            seed=cfg_doc["seed"])


def _spec(cfg_doc):
    C, H, W = cfg_doc["input_shape"]
    return dict(input_size=(H, W), channels=C, mean=np.array(cfg_doc["mean"], np.float32),
                std=np.array(cfg_doc["std"], np.float32), crop_padding=0, flip=False)


def evaluate_run(run_dir, which="best", batch_size=256, device="cpu"):
    """Top-1/top-5 error, loss and confusion matrix of a saved run on its test split, computed on
    `device` (whichever the run trained on: checkpoints are host arrays)."""
    from numconv.train.runs import load_run
    cfg_doc, model = load_run(run_dir, which)
    move_model(model, resolve_run_device(device))
    if cfg_doc.get("stream") and not cfg_doc.get("note"):
        from numconv.data import streaming   # the test split streamed again, statistics stored
        test = streaming.open_stream(cfg_doc["dataset"], val_fraction=cfg_doc["val_fraction"],
                                     statistics=False).test
    else:
        test = run_data(cfg_doc).test
    return _report(model, test, make_preparer(_spec(cfg_doc)), batch_size,
                   SoftmaxCrossEntropy(), cfg_doc["classes"])


def predict_files(run_dir, paths, device="cpu"):
    """-> [(path, probabilities, class names)] for each image file, the model run on `device`."""
    from numconv.data import images as data
    from numconv.ops.nn import softmax
    from numconv.train.runs import load_run
    cfg_doc, model = load_run(run_dir)
    move_model(model, resolve_run_device(device))
    C, H, W = cfg_doc["input_shape"]
    spec = _spec(cfg_doc)
    mode = "L" if len(cfg_doc["mean"]) == 1 else "RGB"
    # one file at a time: photos of different sizes are each fitted to the model's input
    xb = np.concatenate([data.preprocess(data.load_image_files([p], mode=mode),
                                         input_size=(H, W), mean=spec["mean"], std=spec["std"],
                                         channels=C) for p in paths])
    probs = softmax(forward_to_host(model, xb).astype(np.float64))
    return [(p, probs[i], cfg_doc["classes"]) for i, p in enumerate(paths)]
