"""LeNet-5 training throughput: numconv against PyTorch CPU on the same network, data and machine,
in the same run; plus one MNIST epoch's wall time for both, and the time to the first training
step of `numconv train-image` in a fresh process with warm kernel caches.

    python benchmarks/bench_train.py [--batches 64,256] [--steps 40] [--rounds 3] [--threads T]
                                     [--mnist ../shared/data/mnist] [--epoch] [--profile]
                                     [--startup [--repeat 7] [--startup-only]]

Prints what it measured: images/s per batch size for both (the best of --rounds alternating
blocks of --steps steps each, every block's figure printed too), and the ratio numconv / PyTorch; with
--profile, numconv's step layer by layer (median and best milliseconds of each layer's forward
and backward over the timed steps); with --startup, each fresh process's time to its first step
and the median over --repeat processes.
"""
import argparse
import contextlib
import os
import statistics
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _numconv_step(model, loss_fn, opt):
    def step(x, y):
        model.zero_grad()
        logits = model.forward(x)
        loss, d = loss_fn(logits, y)
        model.backward(d)
        opt.step()
        return loss
    return step


def _torch_lenet(torch):
    nn = torch.nn
    return nn.Sequential(nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5),
                         nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 120, 5), nn.ReLU(),
                         nn.Flatten(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))


def _torch_step(torch, model, opt):
    loss_fn = torch.nn.CrossEntropyLoss()

    def step(x, y):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return float(loss.detach())
    return step


def profile_layers(model):
    """Wrap every leaf layer's forward and backward with a timer; returns {name: [seconds]}."""
    times = {}

    def leaves(m, prefix):
        if not m.children:
            yield prefix, m
        for k, c in m.children.items():
            yield from leaves(c, f"{prefix}.{k}" if prefix else k)

    for name, layer in leaves(model, ""):
        for method in ("forward", "backward"):
            inner = getattr(layer, method)
            key = f"{name} ({type(layer).__name__}) {method}"

            def timed(*a, inner=inner, key=key):
                t = time.perf_counter()
                out = inner(*a)
                times.setdefault(key, []).append(time.perf_counter() - t)
                return out
            setattr(layer, method, timed)
    return times


def print_profile(times, warmup=3):
    print(f"  {'layer':<34} {'median ms':>10} {'best ms':>8}")
    for key, ts in times.items():
        ts = ts[warmup:] or ts
        print(f"  {key:<34} {statistics.median(ts) * 1e3:>10.3f} {min(ts) * 1e3:>8.3f}")


def throughput(step, batches, warmup=3):
    for x, y in batches[:warmup]:
        step(x, y)
    t = time.perf_counter()
    n = 0
    for x, y in batches[warmup:]:
        step(x, y)
        n += len(y)
    return n / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--batches", default="64,256", help="Batch sizes to measure.")
    ap.add_argument("--steps", type=int, default=40, help="Timed steps per block.")
    ap.add_argument("--rounds", type=int, default=3,
                    help="Alternating timed blocks per library and batch size (the best counts).")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="Threads for both.")
    ap.add_argument("--mnist", default=None, help="MNIST IDX folder for the one-epoch timing.")
    ap.add_argument("--epoch", action="store_true", help="Also time one MNIST epoch (batch 64).")
    ap.add_argument("--profile", action="store_true",
                    help="Also time numconv's step layer by layer (after the throughput runs).")
    ap.add_argument("--startup", action="store_true",
                    help="Also time a fresh train-image process to its first step.")
    ap.add_argument("--repeat", type=int, default=5,
                    help="Fresh processes timed with warm caches (--startup); the median is given.")
    ap.add_argument("--startup-only", action="store_true",
                    help="Only the --startup timing (no throughput, no PyTorch).")
    args = ap.parse_args()
    if args.startup_only:
        startup(args.repeat)
        return

    import numba
    import torch
    from numconv import models
    from numconv.nn import SoftmaxCrossEntropy
    from numconv.optim import SGD
    from numconv.kernels.cpu._blas import single_threaded_blas

    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    torch.set_num_threads(args.threads)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"threads {args.threads}; numba {numba.__version__}, torch {torch.__version__}, "
          f"numpy {np.__version__}")

    rng = np.random.default_rng(0)
    print(f"{'batch':>6} {'numconv img/s':>14} {'torch img/s':>12} {'ratio':>6}")
    for bs in [int(b) for b in args.batches.split(",")]:
        data = [(rng.standard_normal((bs, 1, 32, 32)).astype(np.float32),
                 rng.integers(0, 10, bs)) for _ in range(args.steps + 3)]
        model = models.build_model("lenet5", seed=0)
        model.skip_input_gradient()   # as train-image does, and PyTorch (inputs need no grad)
        step = _numconv_step(model, SoftmaxCrossEntropy(), SGD(model.named_parameters(), 0.01, 0.9))
        tmodel = _torch_lenet(torch)
        topt = torch.optim.SGD(tmodel.parameters(), lr=0.01, momentum=0.9)
        tdata = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in data]
        tstep = _torch_step(torch, tmodel, topt)
        # alternating blocks, a pause before each so that the other library's idle threads have
        # stopped spinning; the best block of each counts, every block is printed
        rates = {"numconv": [], "torch": []}
        for _ in range(args.rounds):
            for name, fn, d in (("numconv", step, data), ("torch", tstep, tdata)):
                time.sleep(0.3)
                # numconv's blocks hold BLAS on one thread throughout, as its training loop does
                with single_threaded_blas() if name == "numconv" else contextlib.nullcontext():
                    rates[name].append(throughput(fn, d))
        ours, theirs = max(rates["numconv"]), max(rates["torch"])
        print(f"{bs:>6} {ours:>14.0f} {theirs:>12.0f} {ours / theirs:>6.2f}   blocks: numconv "
              f"{' '.join(f'{r:.0f}' for r in rates['numconv'])}, torch "
              f"{' '.join(f'{r:.0f}' for r in rates['torch'])}")
        if args.profile:
            model = models.build_model("lenet5", seed=0)
            model.skip_input_gradient()
            times = profile_layers(model)
            with single_threaded_blas():
                throughput(_numconv_step(model, SoftmaxCrossEntropy(),
                                         SGD(model.named_parameters(), 0.01, 0.9)), data)
            print_profile(times)

    if args.epoch:
        from numconv.data import images
        src = args.mnist or os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data",
                                         "mnist")
        ds = images.load_images(src)
        spec = dict(input_size=(32, 32), mean=ds.mean, std=ds.std, channels=1)
        order = np.random.default_rng(0).permutation(len(ds.train.y))
        batches = [images.make_batch(ds.train, order[i:i + 64], **spec)
                   for i in range(0, len(order), 64)]
        model = models.build_model("lenet5", seed=0)
        model.skip_input_gradient()
        step = _numconv_step(model, SoftmaxCrossEntropy(), SGD(model.named_parameters(), 0.01, 0.9))
        t = time.perf_counter()
        with single_threaded_blas():
            for x, y in batches:
                step(x, y)
        ours = time.perf_counter() - t
        tmodel = _torch_lenet(torch)
        tstep = _torch_step(torch, tmodel, torch.optim.SGD(tmodel.parameters(), lr=0.01,
                                                           momentum=0.9))
        t = time.perf_counter()
        for x, y in batches:
            tstep(torch.from_numpy(x), torch.from_numpy(y))
        theirs = time.perf_counter() - t
        print(f"one MNIST epoch ({len(order)} images, batch 64): numconv {ours:.1f} s, "
              f"torch {theirs:.1f} s, ratio (torch time / numconv time) {theirs / ours:.2f}")

    if args.startup:
        startup(args.repeat)


def startup(repeat):
    """Time fresh `numconv train-image --dataset digits` processes to their first training step:
    one that may compile, then `repeat` with warm kernel caches. In-process time counts from the
    first line of the script (after Python's own start-up); wall time includes it."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-c",
               "import time, sys; t0 = time.perf_counter()\n"
               "from numconv.train import loop\n"
               "orig = loop.fit\n"
               "def fit(*a, **k):\n"
               "    cb = k['callbacks']\n"
               "    def first(*args):\n"
               "        print(f'FIRST_STEP {time.perf_counter() - t0:.3f}', flush=True)\n"
               "        raise SystemExit(0)\n"
               "    cb.batch_end = first\n"
               "    return orig(*a, **k)\n"
               "loop.fit = fit\n"
               "from cli.main import main\n"
               f"main(['train-image', '--dataset', 'digits', '--run-dir', '{tmp}/r'])\n"]
        inside, wall = [], []
        for k in range(repeat + 1):
            label = "first run (may compile)" if k == 0 else f"warm caches, run {k}"
            t = time.perf_counter()
            out = subprocess.run(cmd, capture_output=True, text=True)
            line = [x for x in out.stdout.splitlines() if x.startswith("FIRST_STEP")]
            if not line:
                print(f"startup probe failed: {out.stderr[-500:]}")
                return
            took = time.perf_counter() - t
            print(f"time to first training step, {label}: {float(line[0].split()[1]):.2f} s "
                  f"in-process, {took:.2f} s wall")
            if k:
                inside.append(float(line[0].split()[1]))
                wall.append(took)
            subprocess.run(["rm", "-rf", f"{tmp}/r"])
        if inside:
            print(f"time to first training step, warm caches, median of {len(inside)}: "
                  f"{statistics.median(inside):.2f} s in-process, {statistics.median(wall):.2f} s "
                  f"wall")


if __name__ == "__main__":
    main()
