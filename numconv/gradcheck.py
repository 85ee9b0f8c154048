"""Gradient checking: analytic gradients against central finite differences, kernels against the
reference, and run-twice determinism, over a sweep of configurations of every op.

Each `Case` is one op with one configuration and float64 inputs. `check_case` runs three checks:

- **gradient** of each differentiable input: the full Jacobian, column by column from central
  differences (f(x + eps e_i) - f(x - eps e_i)) / 2 eps, against row by row from the backward pass
  (one backward call per unit output vector); or, with `fast=True`, random projections v^T J u.
- **reference**: the device's forward and gradients against the plain-NumPy reference kernels.
- **determinism**: two runs give bit-identical outputs and gradients.

Kinks: max pooling's inputs are drawn as distinct values at least 1e-2 apart (a perturbation of eps
never changes a window's winner), and Lp pooling's away from 0 where |x| has its kink, as Caffe's
checker does by moving the probe away from non-differentiable points.

Whole models (`model_checks`, `check_model`, `run_models`; `numconv gradcheck --model NAME`): a
scaled-down build of each model in float64, its gradient with respect to the input and to every
parameter checked by vᵀJu projections, probes that cross a ReLU or max-pool kink detected and
retried; see the section at the end of this file.

Nothing here prints; `numconv gradcheck` renders the returned `CheckResult`s.
"""
import contextlib
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from numconv import config
from numconv import ops


@dataclass
class Case:
    op: str
    label: str                      # the configuration, human-readable
    inputs: dict                    # name -> float64 array
    grad_inputs: tuple              # names of the inputs that receive gradients
    forward: Callable               # (inputs, device) -> y
    backward: Callable              # (dy, inputs, device) -> {name: gradient}
    projections_only: bool = False  # too many inputs for the full Jacobian: v^T J u even unfast


@dataclass
class CheckResult:
    op: str
    label: str
    check: str
    max_abs: float
    max_rel: float
    passed: bool
    detail: str = ""


@dataclass
class Tolerances:
    eps: float = config.GRADCHECK_EPS
    atol: float = config.GRADCHECK_ATOL
    rtol: float = config.GRADCHECK_RTOL


def _errors(a, b, atol, rtol):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return math.inf, math.inf, False
    diff = np.abs(a - b)
    scale = np.maximum(np.abs(a), np.abs(b))
    rel = np.where(scale > atol, diff / np.where(scale > 0, scale, 1), 0.0)
    ok = bool(np.all(diff <= atol + rtol * np.abs(b)))
    return float(diff.max(initial=0.0)), float(rel.max(initial=0.0)), ok


# ----------------------------------------------------------------------------------------------
# Checks
# ----------------------------------------------------------------------------------------------

def _numeric_jacobian(case, name, device, eps):
    x = case.inputs[name]
    y0 = case.forward(case.inputs, device)
    jac = np.empty((y0.size, x.size))
    flat = x.reshape(-1)
    for i in range(x.size):
        keep = flat[i]
        flat[i] = keep + eps
        yp = case.forward(case.inputs, device).reshape(-1)
        flat[i] = keep - eps
        ym = case.forward(case.inputs, device).reshape(-1)
        flat[i] = keep
        jac[:, i] = (yp - ym) / (2 * eps)
    return jac


def _analytic_jacobian(case, names, device):
    y0 = case.forward(case.inputs, device)
    jacs = {n: np.empty((y0.size, case.inputs[n].size)) for n in names}
    dy = np.zeros(y0.size)
    for j in range(y0.size):
        dy[j] = 1.0
        grads = case.backward(dy.reshape(y0.shape), case.inputs, device)
        dy[j] = 0.0
        for n in names:
            jacs[n][j] = grads[n].reshape(-1)
    return jacs


def _projection_check(case, name, device, tol, rng, n_proj):
    """v^T J u by central differences along u, against <backward(v), u>."""
    x = case.inputs[name]
    y0 = case.forward(case.inputs, device)
    numeric, analytic = [], []
    for _ in range(n_proj):
        u = rng.standard_normal(x.shape)
        v = rng.standard_normal(y0.shape)
        keep = x.copy()
        x += tol.eps * u
        yp = case.forward(case.inputs, device)
        x[...] = keep - tol.eps * u
        ym = case.forward(case.inputs, device)
        x[...] = keep
        numeric.append(float(np.sum(v * (yp - ym)) / (2 * tol.eps)))
        analytic.append(float(np.sum(case.backward(v, case.inputs, device)[name] * u)))
    return np.array(analytic), np.array(numeric)


def check_case(case, device="cpu", tol=None, fast=False, seed=0, n_proj=4):
    """Run every check on one case; returns a list of CheckResult."""
    tol = tol or Tolerances()
    rng = np.random.default_rng(seed)
    results = []
    y = case.forward(case.inputs, device)
    dy = rng.standard_normal(y.shape)

    if fast or case.projections_only:
        # a large case checked without --fast takes four times the projections
        k = n_proj if fast else 4 * n_proj
        for name in case.grad_inputs:
            a, n = _projection_check(case, name, device, tol, rng, k)
            results.append(CheckResult(case.op, case.label, f"grad {name} (vᵀJu)",
                                       *_errors(a, n, tol.atol, tol.rtol)))
    else:
        analytic = _analytic_jacobian(case, case.grad_inputs, device)
        for name in case.grad_inputs:
            numeric = _numeric_jacobian(case, name, device, tol.eps)
            results.append(CheckResult(case.op, case.label, f"grad {name} (Jacobian)",
                                       *_errors(analytic[name], numeric, tol.atol, tol.rtol)))

    # Kernel against the reference: forward and every gradient, same inputs.
    ref_y = case.forward(case.inputs, "reference")
    grads = case.backward(dy, case.inputs, device)
    ref_grads = case.backward(dy, case.inputs, "reference")
    worst = [_errors(y, ref_y, 1e-12, 1e-10)]
    worst += [_errors(grads[n], ref_grads[n], 1e-12, 1e-10) for n in case.grad_inputs]
    results.append(CheckResult(case.op, case.label, "vs reference",
                               max(w[0] for w in worst), max(w[1] for w in worst),
                               all(w[2] for w in worst)))

    # Determinism: a second run must give the very same bits.
    y2 = case.forward(case.inputs, device)
    grads2 = case.backward(dy, case.inputs, device)
    same = np.array_equal(y, y2) and all(np.array_equal(grads[n], grads2[n])
                                         for n in case.grad_inputs)
    results.append(CheckResult(case.op, case.label, "determinism", 0.0 if same else math.inf,
                               0.0 if same else math.inf, same))
    return results


# ----------------------------------------------------------------------------------------------
# The sweep
# ----------------------------------------------------------------------------------------------

def _conv_cases(nd, rng):
    fwd = ops.conv1d if nd == 1 else ops.conv2d
    conv_fwd = ops.convolve1d if nd == 1 else ops.convolve2d
    bwd_x = ops.conv1d_backward_input if nd == 1 else ops.conv2d_backward_input
    bwd_w = ops.conv1d_backward_weight if nd == 1 else ops.conv2d_backward_weight
    bwd_b = ops.conv1d_backward_bias if nd == 1 else ops.conv2d_backward_bias
    configs = [
        dict(C=2, O=3, k=3, stride=1, padding=0, dilation=1, groups=1),
        dict(C=2, O=3, k=3, stride=2, padding=1, dilation=1, groups=1),
        dict(C=2, O=2, k=2, stride=3, padding=0, dilation=1, groups=1),   # stride > kernel
        dict(C=2, O=3, k=3, stride=1, padding="same", dilation=1, groups=1),
        dict(C=2, O=3, k=2, stride=2, padding="same", dilation=1, groups=1),
        dict(C=1, O=2, k=3, stride=1, padding="full", dilation=1, groups=1),
        dict(C=2, O=2, k=3, stride=1, padding="valid", dilation=2, groups=1),
        dict(C=4, O=4, k=3, stride=1, padding=1, dilation=1, groups=2),
        dict(C=3, O=6, k=3, stride=1, padding=1, dilation=1, groups=3),   # depthwise
        # enough maps that 'auto' leaves the direct kernels: the taps kernels (2-D) and the
        # shifted products (1-D), which the small configurations never reach
        dict(C=24, O=33, k=3, stride=1, padding=1, dilation=1, groups=1, large=True),
        dict(C=2, O=2, k=3, stride=2, padding=((1, 0),) * nd if nd == 1 else ((1, 0), (0, 2)),
             dilation=1, groups=1),                                       # asymmetric
    ]
    cases = []
    for flip in (False, True):
        for cfg in configs:
            N, C, O, k = 2, cfg["C"], cfg["O"], cfg["k"]
            spatial = (7,) if nd == 1 else (6, 5)
            if cfg.get("large"):                 # many channels, so a small image and batch
                N, spatial = 1, spatial[:1] if nd == 1 else (4, 3)
            x = rng.standard_normal((N, C) + spatial)
            w = rng.standard_normal((O, C // cfg["groups"]) + (k,) * nd)
            b = rng.standard_normal(O)
            opts = dict(stride=cfg["stride"], padding=cfg["padding"], dilation=cfg["dilation"],
                        groups=cfg["groups"])
            kernel = (k,) * nd

            def forward(inp, device, opts=opts, f=conv_fwd if flip else fwd):
                return f(inp["x"], inp["w"], inp["b"], device=device, **opts)

            def backward(dy, inp, device, opts=opts, kernel=kernel, flip=flip):
                return {"x": bwd_x(dy, inp["w"], inp["x"].shape, flip=flip, device=device, **opts),
                        "w": bwd_w(dy, inp["x"], kernel, flip=flip, device=device, **opts),
                        "b": bwd_b(dy, device=device)}

            label = (f"{'convolve' if flip else 'correlate'} C={C} O={O} k={k} "
                     f"s={cfg['stride']} p={cfg['padding']} d={cfg['dilation']} g={cfg['groups']}")
            cases.append(Case(f"conv{nd}d", label, {"x": x, "w": w, "b": b}, ("x", "w", "b"),
                              forward, backward, projections_only=cfg.get("large", False)))
    return cases


def _distinct(rng, shape, spacing=1e-2):
    """Values that differ pairwise by at least `spacing`: no ties for max pooling to trip on."""
    n = int(np.prod(shape))
    vals = (rng.permutation(n) - n / 2) * spacing
    return vals.reshape(shape).astype(np.float64)


def _pool_windows(nd):
    ks = [2, 3, 3, 2, 3]
    ss = [None, 1, 2, 3, 2]
    ps = [0, 1, 1, 0, 1]
    cms = [False, False, True, True, False]
    for k, s, p, cm in zip(ks, ss, ps, cms):
        yield dict(kernel_size=k if nd == 1 else (k, max(1, k - 1) if k == 3 else k),
                   stride=s, padding=p, ceil_mode=cm)


def _pool_cases(nd, rng):
    spatial = (9,) if nd == 1 else (7, 6)
    shape = (2, 2) + spatial
    cases = []
    mx = ops.max_pool1d if nd == 1 else ops.max_pool2d
    mx_b = ops.max_pool1d_backward if nd == 1 else ops.max_pool2d_backward
    av = ops.avg_pool1d if nd == 1 else ops.avg_pool2d
    av_b = ops.avg_pool1d_backward if nd == 1 else ops.avg_pool2d_backward
    lp = ops.lp_pool1d if nd == 1 else ops.lp_pool2d
    lp_b = ops.lp_pool1d_backward if nd == 1 else ops.lp_pool2d_backward
    for win in _pool_windows(nd):
        label = ", ".join(f"{k}={v}" for k, v in win.items())

        def f_max(inp, device, win=win):
            return mx(inp["x"], device=device, **win)

        def b_max(dy, inp, device, win=win):
            _, idx = mx(inp["x"], return_indices=True, device=device, **win)
            return {"x": mx_b(dy, idx, inp["x"].shape, device=device, **win)}

        cases.append(Case(f"max_pool{nd}d", label, {"x": _distinct(rng, shape)}, ("x",),
                          f_max, b_max))
        for cip in (True, False):
            def f_avg(inp, device, win=win, cip=cip):
                return av(inp["x"], count_include_pad=cip, device=device, **win)

            def b_avg(dy, inp, device, win=win, cip=cip):
                return {"x": av_b(dy, inp["x"].shape, count_include_pad=cip, device=device, **win)}

            cases.append(Case(f"avg_pool{nd}d", f"{label}, count_include_pad={cip}",
                              {"x": rng.standard_normal(shape)}, ("x",), f_avg, b_avg))
        for p in (1.0, 2.0, 3.0):
            def f_lp(inp, device, win=win, p=p):
                return lp(inp["x"], p, device=device, **win)

            def b_lp(dy, inp, device, win=win, p=p):
                y = lp(inp["x"], p, device=device, **win)
                return {"x": lp_b(dy, inp["x"], y, p, device=device, **win)}

            x = rng.uniform(0.2, 1.0, shape) * rng.choice([-1.0, 1.0], shape)
            cases.append(Case(f"lp_pool{nd}d", f"p={p:g}, {label}", {"x": x}, ("x",), f_lp, b_lp))
    return cases


def _global_cases(rng):
    cases = []
    for shape in ((2, 3, 7), (2, 3, 4, 5)):
        for kind in ops.GLOBAL_KINDS:
            def forward(inp, device, kind=kind):
                return ops.global_pool(inp["x"], kind, device=device)

            def backward(dy, inp, device, kind=kind):
                _, idx = ops.global_pool(inp["x"], kind, return_indices=True, device=device)
                return {"x": ops.global_pool_backward(dy, idx, inp["x"].shape, kind,
                                                      device=device)}

            x = _distinct(rng, shape) if kind == "max" else rng.standard_normal(shape)
            cases.append(Case("global_pool", f"{kind}, input {shape}", {"x": x}, ("x",),
                              forward, backward))
    return cases


def _conv_max_cases(rng, gap=1e-3):
    """conv1d followed by max over positions (Kim's max-over-time pooling), its gradients taken
    from the winners alone (ops.conv1d_max_backward). Inputs are redrawn until every (n, o)'s best
    window leads the next by `gap`, so no probe changes a winner."""
    configs = [dict(k=3, stride=1, padding=0, dilation=1), dict(k=3, stride=2, padding=1,
                                                                dilation=1),
               dict(k=2, stride=1, padding="same", dilation=1),
               dict(k=3, stride=1, padding="full", dilation=1),
               dict(k=2, stride=1, padding=0, dilation=3), dict(k=1, stride=1, padding=0,
                                                                dilation=1)]
    cases = []
    for cfg in configs:
        opts = {key: cfg[key] for key in ("stride", "padding", "dilation")}
        while True:
            x = rng.standard_normal((2, 3, 8))
            w = rng.standard_normal((4, 3, cfg["k"]))
            y = np.sort(ops.conv1d(x, w, **opts), axis=2)
            if y.shape[2] < 2 or (y[:, :, -1] - y[:, :, -2]).min() > gap:
                break
        b = rng.standard_normal(4)

        def forward(inp, device, opts=opts):
            return ops.global_pool(ops.conv1d(inp["x"], inp["w"], inp["b"], device=device,
                                              **opts), "max", device=device)

        def backward(dm, inp, device, opts=opts):
            y = ops.conv1d(inp["x"], inp["w"], inp["b"], device=device, **opts)
            _, idx = ops.global_pool(y, "max", return_indices=True, device=device)
            dx, dw, db = ops.conv1d_max_backward(dm, idx, inp["x"], inp["w"], device=device,
                                                 **opts)
            return {"x": np.ascontiguousarray(dx), "w": dw, "b": db}

        label = (f"C=3 O=4 k={cfg['k']} s={cfg['stride']} p={cfg['padding']} "
                 f"d={cfg['dilation']}")
        cases.append(Case("conv1d_max", label, {"x": x, "w": w, "b": b}, ("x", "w", "b"),
                          forward, backward))
    return cases


OPS = ("conv1d", "conv2d", "max_pool1d", "max_pool2d", "avg_pool1d", "avg_pool2d", "lp_pool1d",
       "lp_pool2d", "global_pool", "conv1d_max")


def sweep(op=None, seed=0):
    """Every Case of the sweep, or only those of `op` (one of OPS). Each op draws from its own
    seeded generator, so `--op NAME` checks exactly the cases the full sweep checks for NAME."""
    if op is not None and op not in OPS:
        raise ValueError(f"op {op!r} is unknown; use one of {', '.join(OPS)}")
    cases = []
    for name in [op] if op else OPS:
        rng = np.random.default_rng([seed, OPS.index(name)])
        if name == "conv1d_max":
            cases += _conv_max_cases(rng)
        elif name.startswith("conv"):
            cases += _conv_cases(int(name[4]), rng)
        elif name == "global_pool":
            cases += _global_cases(rng)
        else:
            cases += [c for c in _pool_cases(int(name[-2]), rng) if c.op == name]
    return cases


def run(op=None, device="cpu", seed=0, tol=None, fast=False, on_result=None):
    """Check every case of the sweep; `on_result(result)` is called as each result arrives."""
    results = []
    for i, case in enumerate(sweep(op, seed)):
        for r in check_case(case, device=device, tol=tol, fast=fast, seed=seed + i):
            results.append(r)
            if on_result:
                on_result(r)
    return results


# ----------------------------------------------------------------------------------------------
# Whole models
# ----------------------------------------------------------------------------------------------
# A model is checked end to end at a scaled-down size (few channels, a small input, batch 2) in
# float64: the gradient of v . logits (plus v_i . aux logits where a model has auxiliary
# classifiers) with respect to the input and to every parameter, each as one projection
# v^T J u: central differences along a random direction u against <backward(v), u>, agreeing to
# the relative tolerance (above a floor of ten times the difference quotient's rounding error).
# Batch norm runs in training mode (batch statistics, differentiable); dropout is switched off.
#
# Kinks: a ReLU's or a max-pool's decision could change between x + eps u and x - eps u, and then
# the difference quotient mixes two linear pieces. After each probe the on/off pattern of every ReLU
# (and residual block's output ReLU) and every max-pool's winners are compared with the unperturbed
# pass; if either probe changed one, the probe is repeated with eps / 10 (with batch norm coupling
# every unit to every input, tens of thousands of units move, and the chance that one of them sits
# within the probe's reach of zero shrinks with eps), as far as rounding allows, then with a new
# direction.

MODEL_BATCH = 2
MODEL_CLASSES = 5
MODEL_DRAWS = 5          # directions drawn before a kink-crossing probe is reported as failed
MODEL_MIN_EPS = 1e-12    # no step below this, whatever the rounding estimate allows
MODEL_MAX_EPS = 1e-4     # the largest step, for groups with tiny derivatives
MODEL_ROUNDOFF_SHARE = 0.01   # rounding may take this share of the relative tolerance


@dataclass
class ModelCheck:
    model: str
    label: str                 # row label: "lenet5", "lenet5 (classic)"
    options: dict
    input_shape: tuple         # (C, H, W) of the scaled-down check
    width: float
    batch_norm: str = "batch"  # "batch": training mode, batch statistics; "eval": running ones


def model_checks(name):
    """The scaled-down configurations `numconv gradcheck --model NAME` checks for one model."""
    from numconv import models
    if name not in models.MODELS:
        raise ValueError(f"model {name!r} is unknown; choose one of {', '.join(models.MODELS)}")
    if name == "lenet5":
        return [ModelCheck(name, name, {}, (1, 32, 32), 1.0),
                ModelCheck(name, f"{name} (classic)", {"classic": True}, (1, 32, 32), 1.0)]
    if name == "alexnet":
        return [ModelCheck(name, name, {}, (3, 67, 67), 1 / 32)]   # 67: its smallest input
    if name == "smallcnn":
        return [ModelCheck(name, name, {}, (1, 12, 12), 0.25)]     # 12 -> 6 -> 3, 8 and 16 maps
    if name.startswith("vgg"):
        return [ModelCheck(name, name, {}, (3, 32, 32), 1 / 16)]
    if name == "googlenet":
        # With the auxiliary classifiers. 64 rather than its smallest input, 47: 5a/5b then work
        # on 2x2 maps, so their 3x3 and 5x5 windows see neighbours and not only padding.
        return [ModelCheck(name, f"{name} (aux)", {"aux": True}, (3, 64, 64), 1 / 16)]
    if name in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"):
        return [ModelCheck(name, name, {}, (3, 40, 40), 1 / 16)]  # 2x2 maps in layer4
    if name == "plain110":
        # With batch statistics, plain-110 at initialisation has gradients of 1e8 and more (batch
        # norm without shortcuts multiplies them by about 1.2 per layer; He et al. could not train
        # it well), and its forward pass amplifies rounding errors as much, so no step resolves
        # its derivative to 1e-5 in float64: steps that clear the kinks drown in rounding. Its
        # check runs batch norm in eval mode (fresh running statistics: the affine identity, a
        # plain He-initialised ReLU net) at half width, where dead regions are rarer; plain20-56
        # and every ResNet check the batch-statistics gradient.
        return [ModelCheck(name, f"{name} (eval BN)", {}, (3, 12, 12), 0.5, "eval")]
    return [ModelCheck(name, name, {}, (3, 12, 12), 0.25)]       # CIFAR ResNets, plain nets


def to_float64(model):
    """Cast every parameter, gradient and floating-point buffer of `model` to float64, in place."""
    for _, m in model.modules():
        for k in list(m.params):
            m.params[k] = np.ascontiguousarray(m.params[k], dtype=np.float64)
            m.grads[k] = np.zeros_like(m.params[k])
        for k, b in list(m.buffers.items()):
            if np.issubdtype(b.dtype, np.floating):
                m.buffers[k] = np.ascontiguousarray(b, dtype=np.float64)
    return model


def _kink_pattern(model):
    """Every ReLU's on/off pattern, every hard tanh's linear range and every max-pool's winners
    after the last forward pass."""
    from numconv.nn import GlobalPool, HardTanh, MaxPool1d, MaxPool2d, ReLU
    pattern = []
    for _, m in model.modules():
        if isinstance(m, ReLU) or (getattr(m, "join", None) == "add" and hasattr(m, "_y")):
            pattern.append(m._y > 0)
        elif isinstance(m, HardTanh):
            pattern.append(np.abs(m._x) < 1)
        elif isinstance(m, (MaxPool1d, MaxPool2d)) or (isinstance(m, GlobalPool)
                                                       and m.kind == "max"):
            pattern.append(m._cache[1])
    return pattern


def _same_pattern(a, b):
    return len(a) == len(b) and all(np.array_equal(p, q) for p, q in zip(a, b))


def _model_outputs(model, x):
    y = model.forward(x)
    return [y] + list(getattr(model, "aux_outputs", None) or [])


def _model_backward(model, vs):
    model.zero_grad()
    if len(vs) > 1:
        return model.backward(vs[0], aux_grads=vs[1:])
    return model.backward(vs[0])


def _param_groups(model, depth):
    """(label, [(name, parameter array)]) per parameter tensor (depth None), or per name prefix of
    `depth` dotted components (depth 2: 'layer1.0', 'features.3')."""
    groups = {}
    for name, p, _ in model.named_parameters():
        key = name if depth is None else ".".join(name.split(".")[:depth])
        groups.setdefault(key, []).append((name, p))
    return list(groups.items())


@contextlib.contextmanager
def _numba_threads(n):
    """Run with n Numba threads, then restore the caller's count. Results do not depend on it."""
    import numba
    if n is None:
        yield
        return
    before = numba.get_num_threads()
    numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(before)


def check_model(check, seed=0, tol=None, group_depth=None, device="cpu", on_result=None,
                threads=1):
    """Check one ModelCheck (see `model_checks`): one CheckResult per parameter group (each tensor
    by default; `group_depth` groups by name prefix) plus the input, then a run-twice determinism
    check. Results carry op = the check's label and label = the group.

    threads: Numba threads while checking (None: leave as is). The scaled-down models' layers are
    so small that a parallel launch costs more than its work (tens of times more on a busy
    machine), so one thread is the default; results are the same bits for any count."""
    with _numba_threads(threads):
        return _check_model(check, seed, tol, group_depth, device, on_result)


def _check_model(check, seed, tol, group_depth, device, on_result):
    from numconv import models
    from numconv.nn import BatchNorm, Dropout
    tol = tol or Tolerances()
    rng = np.random.default_rng([seed, list(models.MODELS).index(check.model)])
    model = models.build_model(check.model, num_classes=MODEL_CLASSES,
                               in_channels=check.input_shape[0], input_size=check.input_shape[1:],
                               width=check.width, seed=seed, **check.options)
    to_float64(model)
    model.train()
    for _, m in model.modules():
        m.device = device
        if isinstance(m, Dropout):
            m.p = 0.0
    x = rng.standard_normal((MODEL_BATCH,) + tuple(check.input_shape))
    if check.batch_norm == "eval":
        for _, m in model.modules():
            if isinstance(m, BatchNorm):
                m.eval()

    ys = _model_outputs(model, x)
    base_pattern = _kink_pattern(model)
    vs = [rng.standard_normal(y.shape) for y in ys]
    dx = _model_backward(model, vs)
    grads = {n: g.copy() for n, _, g in model.named_parameters()}
    results = []

    def emit(r):
        results.append(r)
        if on_result:
            on_result(r)

    # Step size. The difference quotient's rounding error is about eps_mach * sum|v||y| / eps;
    # `rounding` is the step at which it would take MODEL_ROUNDOFF_SHARE of the tolerance. A group
    # with a tiny derivative (AlexNet's N(0, 0.01^2) weights shrink every signal) starts there (at
    # most MODEL_MAX_EPS), others at tol.eps. A probe that disagrees without crossing a kink
    # (curvature: deep nets with batch norm on tiny batches) is repeated with eps / 10 down to
    # `rounding`: a correct gradient is approached as eps shrinks, a wrong one never is. A probe
    # that crosses a kink is repeated with eps / 10 down to MODEL_MIN_EPS (the rounding floor of
    # the comparison grows accordingly), then with a new direction. The analytic side uses the
    # steps actually applied (k + eps u rounds), which matters at the smallest steps.
    scale = sum(float(np.sum(np.abs(v) * np.abs(y))) for v, y in zip(vs, ys))
    mach = np.finfo(np.float64).eps

    def probe(tensors, keep, us, eps):
        outs, steps = [], []
        for sign in (1, -1):
            for (_, t), k, u in zip(tensors, keep, us):
                t[...] = k + sign * eps * u
            steps.append([t.copy() for _, t in tensors])
            outs.append((_model_outputs(model, x), _kink_pattern(model)))
        for (_, t), k in zip(tensors, keep):
            t[...] = k
        (yp, pp), (ym, pm) = outs
        numeric = sum(float(np.sum(v * (a - b))) for v, a, b in zip(vs, yp, ym)) / (2 * eps)
        analytic = sum(float(np.sum((dx if n == "input" else grads[n]) * (tp - tm)))
                       for (n, _), tp, tm in zip(tensors, *steps)) / (2 * eps)
        smooth = _same_pattern(pp, base_pattern) and _same_pattern(pm, base_pattern)
        return analytic, numeric, smooth

    def agree(analytic, numeric, eps):
        """(ok, |difference|, relative difference, floor): relative agreement down to a floor of
        ten times the quotient's rounding error (the ops' absolute tolerance would wave through
        every derivative below 1e-6)."""
        floor = 10 * mach * scale / eps
        diff = abs(analytic - numeric)
        size = max(abs(analytic), abs(numeric))
        return diff <= tol.rtol * size + floor, diff, diff / size if size > 0 else 0.0, floor

    groups = [("input", [("input", x)])] + _param_groups(model, group_depth)
    for label, tensors in groups:
        keep = [t.copy() for _, t in tensors]
        for _ in range(MODEL_DRAWS):
            us = [rng.standard_normal(t.shape) for _, t in tensors]
            nominal = abs(sum(float(np.sum((dx if n == "input" else grads[n]) * u))
                              for (n, _), u in zip(tensors, us)))
            rounding = mach * scale / (MODEL_ROUNDOFF_SHARE * tol.rtol * max(nominal, 1e-300))
            eps = min(MODEL_MAX_EPS, max(tol.eps, rounding))
            lowest = max(MODEL_MIN_EPS, rounding)
            while True:
                analytic, numeric, smooth = probe(tensors, keep, us, eps)
                ok, max_abs, max_rel, floor = agree(analytic, numeric, eps)
                if smooth and ok:
                    break
                # Past `lowest` only to get clear of a kink (the floor then grows with 1/eps).
                if eps / 10 < (MODEL_MIN_EPS if not smooth else lowest):
                    break
                eps /= 10
            if smooth:
                break
        ok = ok and smooth
        detail = (f"analytic {analytic:.10g}, numeric {numeric:.10g} (eps {eps:.1e}, rounding "
                  f"floor {floor:.1e})")
        if not smooth:
            detail += (f"; a ReLU/max-pool kink lay within eps of the point on each of "
                       f"{MODEL_DRAWS} draws")
        emit(CheckResult(check.label, label, "grad (vᵀJu)", max_abs, max_rel, ok, detail))

    # Determinism: the same forward and backward again must give the very same bits.
    ys2 = _model_outputs(model, x)
    dx2 = _model_backward(model, vs)
    same = (all(np.array_equal(a, b) for a, b in zip(ys, ys2)) and np.array_equal(dx, dx2)
            and all(np.array_equal(grads[n], g) for n, _, g in model.named_parameters()))
    emit(CheckResult(check.label, "forward + backward twice", "determinism",
                     0.0 if same else math.inf, 0.0 if same else math.inf, same))
    return results


def run_models(names, device="cpu", seed=0, tol=None, group_depth=None, on_result=None,
               threads=1):
    """Check every scaled-down configuration of each model in `names` ('all': every model)."""
    from numconv import models
    if names == "all" or names == ["all"]:
        names = list(models.MODELS)
    elif isinstance(names, str):
        names = [names]
    results = []
    for name in names:
        for check in model_checks(name):
            results += check_model(check, seed=seed, tol=tol, group_depth=group_depth,
                                   device=device, on_result=on_result, threads=threads)
    return results
