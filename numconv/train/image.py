"""`numconv train-image` as a library call: resolve the configuration from the model's recipe and
the user's overrides, load the data, build the model, train with `numconv.train.loop.fit`, and
write the test report.

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
from numconv.optim import Schedule, make_optimizer
from numconv.train import loop
from numconv.train.checkpoint import (CheckpointError, atomic_write_json, checkpoint_path,
                                      load_checkpoint, prepare_run_dir,
                                      restore_training_state)

DEFAULT_MODEL = "lenet5"
DEFAULT_DATASET = "mnist"


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
    device: str = "cpu"
    threads: int = None
    seed: int = 0
    val_fraction: float = 0.1
    limit: int = None             # use only the first `limit` training images (quick runs)
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
        return self


_FALLBACK = dict(epochs=10, batch_size=64, optimizer="sgd", lr=0.01, momentum=0.9,
                 nesterov=False, weight_decay=0.0, schedule="constant", step_size=30, gamma=0.1,
                 warmup_epochs=0.0, milestones=None, lr_values=None, factor=0.1, patience=5,
                 crop_padding=0, flip=False, label_smoothing=0.0)


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


def _load_dataset(cfg, load_data=None):
    """The run's data: the named source, or (for a hub name that cannot be reached) the embedded
    fallback, with a one-line note saying so. `limit` keeps the first training images."""
    from numconv.data import images as data
    if load_data is not None:
        dataset, note = load_data(cfg.dataset, val_fraction=cfg.val_fraction, seed=cfg.seed)
    elif cfg.dataset == DEFAULT_DATASET:
        dataset, note = data.load_images_or_fallback(cfg.dataset, val_fraction=cfg.val_fraction,
                                                     seed=cfg.seed)
    else:
        dataset, note = data.load_images(cfg.dataset, val_fraction=cfg.val_fraction,
                                         seed=cfg.seed), None
    if cfg.limit:
        if cfg.limit < 1:
            raise ValueError(f"--limit must be >= 1, got {cfg.limit}")
        keep = slice(0, min(cfg.limit, len(dataset.train.y)))
        dataset.train = data.Split(dataset.train.x[keep], dataset.train.y[keep])
    return dataset, note


def _predict_logits(model, split, prepare, batch_size):
    outs = []
    for start in range(0, len(split.y), batch_size):
        idx = np.arange(start, min(len(split.y), start + batch_size))
        x, _ = prepare(split, idx, None, False)
        outs.append(model.forward(x))
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


def train_image(cfg, callbacks=None, resume=False, load_data=None, stop_flag=None):
    """Train (or resume) an image run. Returns a summary dict."""
    cb = callbacks or loop.Callbacks()
    run_dir = prepare_run_dir(cfg.run_dir, resume=resume)
    state = None
    if resume:
        saved = os.path.join(run_dir, "config.json")
        if not os.path.exists(saved):
            raise CheckpointError(f"{run_dir} has no config.json: not a numconv run directory")
        import json
        with open(saved) as f:
            stored = json.load(f)
        stored.pop("resolved_from", None)
        cfg = ImageConfig(**{k: v for k, v in stored.items() if k in ImageConfig.__annotations__})
        cfg.run_dir = run_dir
        model_state, optim_state, sched_state, meta = load_checkpoint(checkpoint_path(run_dir))
        state = loop.TrainState.from_meta(meta)
    cfg.resolve()
    if cfg.threads:
        import numba
        numba.set_num_threads(min(cfg.threads, numba.config.NUMBA_NUM_THREADS))

    dataset, note = _load_dataset(cfg, load_data)
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
                      std=[float(v) for v in np.ravel(dataset.std)], note=note)
    if not resume:
        atomic_write_json(os.path.join(run_dir, "config.json"), config_doc)

    def step_fn(model_, batch):
        x, y = batch
        logits = model_.forward(x)
        loss, dlogits = loss_fn(logits, y)
        aux, aux_grads = models.aux_loss(model_, loss_fn, y)   # GoogLeNet's auxiliary heads
        if aux_grads:
            model_.backward(dlogits, aux_grads=aux_grads)
        else:
            model_.backward(dlogits)
        return loss + aux, int(np.sum(np.argmax(logits, axis=1) == y)), len(y)

    eval_bs = max(cfg.batch_size, 256)
    state, finished = loop.fit(
        model, optimizer, schedule, epochs=cfg.epochs,
        batches_for_epoch=lambda e: EpochBatches(dataset.train, cfg.batch_size, cfg.seed, e,
                                                 prepare),
        step_fn=step_fn,
        evaluate=lambda m: evaluate_split(m, dataset.val, prepare, eval_bs, loss_fn)[0],
        run_dir=run_dir, state=state, callbacks=cb, stop_flag=stop_flag,
        extra_meta={"kind": "image", "model": cfg.model})
    summary = {"run_dir": run_dir, "model": cfg.model, "finished": finished,
               "epochs_done": state.epoch,
               "best_val_acc": state.best_val_acc, "best_epoch": state.best_epoch,
               "dataset": dataset.source, "history": state.history}
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
    metrics, logits = evaluate_split(model, split, prepare, batch_size, loss_fn)
    report = loop.classification_report(logits, split.y, len(classes))
    report.update(loss=metrics["loss"], classes=list(classes))
    atomic_write_json(os.path.join(run_dir, "report.json"), report)
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


def evaluate_run(run_dir, which="best", batch_size=256):
    """Top-1/top-5 error, loss and confusion matrix of a saved run on its test split."""
    from numconv.train.runs import load_run
    cfg_doc, model = load_run(run_dir, which)
    dataset = run_data(cfg_doc)
    loss_fn = SoftmaxCrossEntropy()
    metrics, logits = evaluate_split(model, dataset.test, make_preparer(_spec(cfg_doc)),
                                     batch_size, loss_fn)
    report = loop.classification_report(logits, dataset.test.y, len(cfg_doc["classes"]))
    report.update(loss=metrics["loss"], classes=cfg_doc["classes"])
    return report


def predict_files(run_dir, paths):
    """-> [(path, probabilities, class names)] for each image file."""
    from numconv.data import images as data
    from numconv.ops.nn import softmax
    from numconv.train.runs import load_run
    cfg_doc, model = load_run(run_dir)
    C, H, W = cfg_doc["input_shape"]
    x = data.load_image_files(paths, mode="L" if len(cfg_doc["mean"]) == 1 else "RGB")
    spec = _spec(cfg_doc)
    xb = data.preprocess(x, input_size=(H, W), mean=spec["mean"], std=spec["std"], channels=C)
    probs = softmax(model.forward(xb).astype(np.float64))
    return [(p, probs[i], cfg_doc["classes"]) for i, p in enumerate(paths)]
