"""Optimisers and learning-rate schedules, with PyTorch's update rules so recipes carry over.

- SGD with momentum, Nesterov momentum and (L2) weight decay:
  g = grad + wd p;  v = mu v + g;  p -= lr (g + mu v if nesterov else v).
- Adam (Kingma & Ba 2015) with bias correction; weight decay added to the gradient.
- Adadelta (Zeiler 2012), rho 0.95 and eps 1e-6 as in Kim (2014): no learning rate to tune
  (lr scales the step, 1.0 by default).

Optimisers update parameters in place from the gradients the layers accumulated, and keep their
state (momentum and moment buffers) by parameter name, so a checkpoint can save and restore it.
Parameters on the GPU (a model moved with `model.to("cuda")` before the optimiser is built) are
updated there by the CUDA twins of the same per-element functions (`numconv.kernels.cuda.optim`),
with their state on the GPU too; `state_dict` always returns host arrays.
Schedules return the learning rate for an epoch (a fractional epoch during warm-up).
"""
import importlib
import math

import numpy as np

from numconv.kernels import optim as cpu_kernels
from numconv.ops.nn import on_gpu

OPTIMIZERS = ("sgd", "adam", "adadelta")
SCHEDULES = ("constant", "step", "multistep", "cosine", "plateau")


class Optimizer:
    def __init__(self, named_parameters, lr, weight_decay=0.0, no_decay=()):
        self.params = [(n, p, g) for n, p, g in named_parameters]
        self._shapes = {n: p.shape for n, p, _ in self.params}
        self.lr = lr
        self.weight_decay = weight_decay
        # Biases and batch-norm parameters are usually exempt from weight decay only when the
        # recipe says so; by default (as in the papers and PyTorch) every parameter decays.
        self.no_decay = set(no_decay)
        self.state = {}
        self.steps = 0

    def _decay(self, name):
        return 0.0 if name in self.no_decay else self.weight_decay

    def step(self):
        """One update of every parameter, in place, by a fused kernel per parameter
        (`numconv.kernels.optim`): one pass over memory instead of a NumPy temporary per term."""
        self.steps += 1
        for name, p, g in self.params:
            if on_gpu(p) != on_gpu(g):
                raise ValueError(f"parameter {name} and its gradient are on different devices; "
                                 f"move the model with model.to(device) before building the "
                                 f"optimiser")
            self._update(name, _flat(p, name), _flat(g, name))

    def state_dict(self):
        """Flat name -> array: every buffer, plus the step count."""
        out = {"steps": np.array(self.steps, dtype=np.int64)}
        for pname, bufs in self.state.items():
            for bname, arr in bufs.items():
                out[f"{pname}/{bname}"] = arr.copy_to_host() if on_gpu(arr) else arr
        return out

    def load_state_dict(self, state):
        self.steps = int(state["steps"])
        known = {n: p for n, p, _ in self.params}
        self.state = {}
        for key, arr in state.items():
            if key == "steps":
                continue
            pname, bname = key.rsplit("/", 1)
            if pname not in known:
                raise ValueError(f"optimizer state names parameter {pname!r}, which the model "
                                 f"does not have")
            arr = np.array(arr)
            if on_gpu(known[pname]):
                from numconv.nn.device import to_device
                arr = to_device(arr)
            self.state.setdefault(pname, {})[bname] = arr

    def _buf(self, name, key, like):
        """The state buffer `key` of parameter `name`, flat, created as zeros on first use."""
        bufs = self.state.setdefault(name, {})
        if key not in bufs:
            if on_gpu(like):
                from numconv.nn.device import zeros
                bufs[key] = zeros(self._shapes[name], like.dtype)
            else:
                bufs[key] = np.zeros(self._shapes[name], like.dtype)
        buf = bufs[key]
        if buf.size != like.size or buf.dtype != like.dtype:
            raise ValueError(f"optimizer state {name}/{key} has {buf.size} {buf.dtype} elements, "
                             f"the parameter {like.size} {like.dtype}: the state belongs to "
                             f"another model")
        return _flat(buf, f"{name}/{key}")


def _flat(a, name):
    """A flat view of `a` (the update writes through it, so it must not be a copy)."""
    if on_gpu(a):
        return a.reshape(a.size)     # device arrays from model.to("cuda") are C-contiguous
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} is not a contiguous array; optimizers update parameters in "
                         f"place and need contiguous storage (np.ascontiguousarray)")
    return a.reshape(-1)


def _kernels(p):
    """The update kernels for where parameter p lives."""
    if on_gpu(p):
        return importlib.import_module("numconv.kernels.cuda.optim")
    return cpu_kernels


class SGD(Optimizer):
    def __init__(self, named_parameters, lr, momentum=0.0, nesterov=False, weight_decay=0.0,
                 no_decay=()):
        super().__init__(named_parameters, lr, weight_decay, no_decay)
        if nesterov and momentum <= 0:
            raise ValueError("Nesterov momentum needs momentum > 0")
        self.momentum, self.nesterov = momentum, nesterov

    def _update(self, name, p, g):
        first = "momentum" not in self.state.get(name, {})
        v = self._buf(name, "momentum", p) if self.momentum else p
        # PyTorch starts the momentum buffer at the first gradient (`first`).
        _kernels(p).sgd_update(p, g, v, self.lr, self._decay(name), self.momentum,
                               self.nesterov, first)


class Adam(Optimizer):
    def __init__(self, named_parameters, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 no_decay=()):
        super().__init__(named_parameters, lr, weight_decay, no_decay)
        self.betas, self.eps = betas, eps

    def _update(self, name, p, g):
        b1, b2 = self.betas
        m = self._buf(name, "exp_avg", p)
        v = self._buf(name, "exp_avg_sq", p)
        t = self.steps
        _kernels(p).adam_update(p, g, m, v, self.lr / (1 - b1 ** t), b1, b2, self.eps,
                                self._decay(name), 1 - b2 ** t)


class Adadelta(Optimizer):
    def __init__(self, named_parameters, lr=1.0, rho=0.95, eps=1e-6, weight_decay=0.0,
                 no_decay=()):
        super().__init__(named_parameters, lr, weight_decay, no_decay)
        self.rho, self.eps = rho, eps

    def _update(self, name, p, g):
        sq = self._buf(name, "square_avg", p)
        acc = self._buf(name, "acc_delta", p)
        _kernels(p).adadelta_update(p, g, sq, acc, self.lr, self.rho, self.eps, self._decay(name))


def make_optimizer(name, named_parameters, lr, momentum=0.9, nesterov=False, weight_decay=0.0,
                   no_decay=()):
    if name == "sgd":
        return SGD(named_parameters, lr, momentum, nesterov, weight_decay, no_decay)
    if name == "adam":
        return Adam(named_parameters, lr, weight_decay=weight_decay, no_decay=no_decay)
    if name == "adadelta":
        return Adadelta(named_parameters, lr, weight_decay=weight_decay, no_decay=no_decay)
    raise ValueError(f"optimizer {name!r} is unknown; use one of {', '.join(OPTIMIZERS)}")


class Schedule:
    """Learning rate per epoch: 'constant', 'step' (times gamma every step_size epochs),
    'multistep' (times gamma at each epoch in `milestones`, or the explicit `lr_values`: the rate
    before the first milestone, between the first and second, ...), 'cosine' (from base_lr down to
    min_lr over the run) or 'plateau' (times factor when the validation
    metric has not improved for `patience` epochs). An optional linear warm-up over the first
    `warmup_epochs` ramps from base_lr / 10 (by fractional epoch, i.e. per batch)."""

    def __init__(self, kind, base_lr, epochs, step_size=30, gamma=0.1, factor=0.1, patience=5,
                 min_lr=0.0, warmup_epochs=0.0, milestones=(), lr_values=None):
        if kind not in SCHEDULES:
            raise ValueError(f"schedule {kind!r} is unknown; use one of {', '.join(SCHEDULES)}")
        if base_lr <= 0:
            raise ValueError(f"learning rate must be > 0, got {base_lr}")
        self.kind, self.base_lr, self.epochs = kind, base_lr, epochs
        self.step_size, self.gamma = step_size, gamma
        self.factor, self.patience, self.min_lr = factor, patience, min_lr
        self.warmup_epochs = warmup_epochs
        self.milestones = sorted(int(m) for m in (milestones or ()))
        if kind == "multistep" and not self.milestones:
            raise ValueError("schedule 'multistep' needs milestones (epochs where the rate drops)")
        if lr_values is not None and len(lr_values) != len(self.milestones) + 1:
            raise ValueError(f"lr_values (--lr-values) needs one rate per interval: "
                             f"{len(self.milestones) + 1} "
                             f"for milestones {self.milestones}, got {len(lr_values)}")
        self.lr_values = list(lr_values) if lr_values is not None else None
        self.plateau_scale = 1.0
        self.best = -math.inf
        self.bad_epochs = 0

    def lr(self, epoch):
        """epoch: 0-based, fractional within an epoch."""
        if self.kind == "step":
            lr = self.base_lr * self.gamma ** (int(epoch) // self.step_size)
        elif self.kind == "multistep":
            passed = sum(1 for m in self.milestones if int(epoch) >= m)
            lr = (self.lr_values[passed] * self.base_lr / self.lr_values[0] if self.lr_values
                  else self.base_lr * self.gamma ** passed)
        elif self.kind == "cosine":
            t = min(epoch / max(self.epochs, 1), 1.0)
            lr = self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (1 + math.cos(math.pi * t))
        elif self.kind == "plateau":
            lr = max(self.base_lr * self.plateau_scale, self.min_lr)
        else:
            lr = self.base_lr
        if epoch < self.warmup_epochs:
            lr *= 0.1 + 0.9 * epoch / self.warmup_epochs
        return lr

    def end_epoch(self, metric):
        """Report the epoch's validation metric (higher is better) for 'plateau'."""
        if self.kind != "plateau":
            return
        if metric > self.best:
            self.best, self.bad_epochs = metric, 0
        else:
            self.bad_epochs += 1
            if self.bad_epochs > self.patience:
                self.plateau_scale *= self.factor
                self.bad_epochs = 0

    def state_dict(self):
        return {"plateau_scale": np.array(self.plateau_scale), "best": np.array(self.best),
                "bad_epochs": np.array(self.bad_epochs)}

    def load_state_dict(self, state):
        self.plateau_scale = float(state["plateau_scale"])
        self.best = float(state["best"])
        self.bad_epochs = int(state["bad_epochs"])
