"""numconv's Linear layer (numconv.ops.nn.linear_forward / linear_backward) against PyTorch CPU and
against NumPy's own matmul, on the fully-connected layers of the classic CNNs.

    python benchmarks/bench_linear.py [--repeat N] [--threads T]

For each layer: the median time of --repeat runs (after one untimed warm-up, which compiles) of
the forward product (y = x w^T + b) and of the backward (dx, dw, db), for numconv, for NumPy's
`x @ w.T` expressions (what numconv ran before its own kernels) and for PyTorch
(torch.nn.functional.linear; backward through autograd). Before timing it checks numconv's y, dx,
dw and db against NumPy's. Prints what it measured and the ratio numconv / PyTorch in throughput.
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

LAYERS = [
    ("LeNet-5 F6", 64, 120, 84),
    ("LeNet-5 F6, batch 256", 256, 120, 84),
    ("Kim CNN output", 50, 300, 2),
    ("ResNet-50 fc", 64, 2048, 1000),
    ("AlexNet fc6", 128, 9216, 4096),
    ("AlexNet fc7", 128, 4096, 4096),
]


def _median_time(fn, repeat):
    # a pause first, so that the other library's idle worker threads have stopped spinning and
    # do not steal the cores (numba's and torch's OpenMP pools share this process)
    time.sleep(0.3)
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    import numba
    import torch
    from numconv.ops import nn as F
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    torch.set_num_threads(args.threads)
    print(f"{os.cpu_count()} cores, threads {args.threads}; numba {numba.__version__}, "
          f"torch {torch.__version__}, numpy {np.__version__}; median of {args.repeat} (ms)")
    print(f"{'layer':24s} {'N x I -> O':>18s} | {'fwd numconv':>11s} {'numpy':>7s} {'torch':>7s} "
          f"{'ratio':>5s} | {'bwd numconv':>11s} {'numpy':>7s} {'torch':>7s} {'ratio':>5s}")
    rng = np.random.default_rng(0)
    for name, N, I, O in LAYERS:
        x = rng.standard_normal((N, I), dtype=np.float32)
        w = (rng.standard_normal((O, I), dtype=np.float32) / np.sqrt(I)).astype(np.float32)
        b = rng.standard_normal(O, dtype=np.float32)
        dy = rng.standard_normal((N, O), dtype=np.float32)
        y = F.linear_forward(x, w, b)
        dx, dw, db = F.linear_backward(dy, x, w)
        for got, want in ((y, x @ w.T + b), (dx, dy @ w), (dw, dy.T @ x), (db, dy.sum(0))):
            err = np.abs(got - want).max() / max(1e-30, np.abs(want).max())
            if err > 1e-4:
                raise SystemExit(f"{name}: numconv disagrees with NumPy (relative error {err:.1e})")
        tx, tw, tb = (torch.from_numpy(a).requires_grad_() for a in (x, w, b))
        tdy = torch.from_numpy(dy)

        def torch_fwd():
            with torch.no_grad():
                torch.nn.functional.linear(tx, tw, tb)

        def torch_bwd():
            out = torch.nn.functional.linear(tx, tw, tb)
            out.backward(tdy)
            tx.grad = tw.grad = tb.grad = None
        fwd = [_median_time(f, args.repeat) for f in (
            lambda: F.linear_forward(x, w, b), lambda: x @ w.T + b, torch_fwd)]
        bwd = [_median_time(f, args.repeat) for f in (
            lambda: F.linear_backward(dy, x, w), lambda: (dy @ w, dy.T @ x, dy.sum(0)),
            torch_bwd)]
        # torch's "backward" includes its forward: subtract its forward time for the ratio
        tb_only = max(bwd[2] - fwd[2], 1e-9)
        print(f"{name:24s} {f'{N} x {I} -> {O}':>18s} | {fwd[0] * 1e3:11.3f} {fwd[1] * 1e3:7.3f} "
              f"{fwd[2] * 1e3:7.3f} {fwd[2] / fwd[0]:5.2f} | {bwd[0] * 1e3:11.3f} "
              f"{bwd[1] * 1e3:7.3f} {tb_only * 1e3:7.3f} {tb_only / bwd[0]:5.2f}", flush=True)


if __name__ == "__main__":
    main()
