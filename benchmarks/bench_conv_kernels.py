"""numconv's CPU convolution kernels against each other, pass by pass (float32).

    python benchmarks/bench_conv_kernels.py [--layers NAME,...] [--kernels K,...] [--rounds N]
                                            [--threads T] [--seed S]

For each layer and each kernel of --kernels (config.CPU_CONV_KERNEL: auto, im2col, direct, taps, blocked;
direct and taps need stride 1, every layer here has it) it times the forward pass, the input
gradient and the weight gradient, each called alone on the same arrays. The kernels take turns
within every round, so a machine that slows down for a while slows all of them alike; the table
shows the best of --rounds rounds in GFLOP/s (2*N*O*OH*OW*Cg*KH*KW per pass). Before timing, every
kernel's three results are checked against the first kernel's (max difference relative to the
largest value < 1e-4); a fast wrong answer is not a result.

This is how the rules in numconv.config that pick a kernel by shape were measured. PyTorch is not
involved: bench_conv.py compares against it.
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

# name: (N, C, H, W, O, KH, KW, padding)
LAYERS = {
    "lenet-c3-n256": (256, 6, 14, 14, 16, 5, 5, 0),
    "resnet-3x3": (128, 64, 56, 56, 64, 3, 3, 1),
    "alexnet-conv2": (64, 96, 27, 27, 256, 5, 5, 2),
    "vgg-3x3-256": (16, 256, 28, 28, 256, 3, 3, 1),
    "3x3-128": (32, 128, 28, 28, 128, 3, 3, 1),
    "3x3-512-7x7": (32, 512, 7, 7, 512, 3, 3, 1),
    "3x3-256-14x14": (32, 256, 14, 14, 256, 3, 3, 1),
    "alexnet-conv3": (64, 256, 13, 13, 384, 3, 3, 1),
    "3x3-96-56": (32, 96, 56, 56, 96, 3, 3, 1),
    "1x1-256-64": (32, 256, 56, 56, 64, 1, 1, 0),
    "1x1-1024-256": (32, 1024, 14, 14, 256, 1, 1, 0),
    "kim-k4": (50, 300, 1, 60, 100, 1, 4, 0),
    "cifar-16": (128, 16, 32, 32, 16, 3, 3, 1),
    "cifar-32": (128, 32, 16, 16, 32, 3, 3, 1),
    "cifar-64": (128, 64, 8, 8, 64, 3, 3, 1),
    "cifar-3-16": (128, 3, 32, 32, 16, 3, 3, 1),
    "16-32-16x16": (128, 16, 16, 16, 32, 3, 3, 1),
    "8-16-32x32": (128, 8, 32, 32, 16, 3, 3, 1),
    "3x3-48-28": (32, 48, 28, 28, 48, 3, 3, 1),
    "googlenet-5x5": (32, 32, 28, 28, 96, 5, 5, 2),
}
KERNELS = ("auto", "im2col", "direct", "taps", "blocked")
MATCH_TOL = 1e-4


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--layers", default="resnet-3x3,alexnet-conv2,vgg-3x3-256,1x1-256-64",
                   help="comma-separated, from: " + ", ".join(LAYERS))
    p.add_argument("--kernels", default="im2col,taps",
                   help="comma-separated, from: " + ", ".join(KERNELS))
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    p.add_argument("--threads", type=int, default=None, help="numba threads (default: all)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.layers = [v for v in args.layers.split(",") if v]
    args.kernels = [v for v in args.kernels.split(",") if v]
    for name in args.layers:
        if name not in LAYERS:
            p.error(f"--layers: unknown layer {name!r}; choose from {', '.join(LAYERS)}")
    for name in args.kernels:
        if name not in KERNELS:
            p.error(f"--kernels: unknown kernel {name!r}; choose from {', '.join(KERNELS)}")
    if args.rounds < 1:
        p.error(f"--rounds must be at least 1, got {args.rounds}")
    return args


def main(argv=None):
    args = parse_args(argv)
    import numba
    import numpy as np
    from rich.console import Console
    from rich.table import Table

    import numconv as nc
    from numconv import config

    if args.threads:
        numba.set_num_threads(args.threads)
    console = Console()
    table = Table(title="GFLOP/s, best of %d alternating rounds (%d threads)"
                  % (args.rounds, numba.get_num_threads()))
    for col in ("layer", "kernel", "forward", "input gradient", "weight gradient"):
        table.add_column(col, justify="left" if col in ("layer", "kernel") else "right")
    saved = config.CPU_CONV_KERNEL
    try:
        for name in args.layers:
            N, C, H, W, O, KH, KW, pad = LAYERS[name]
            rng = np.random.default_rng(args.seed)
            x = rng.standard_normal((N, C, H, W), dtype=np.float32)
            w = rng.standard_normal((O, C, KH, KW), dtype=np.float32)
            y0 = nc.conv2d(x, w, padding=pad)
            dy = rng.standard_normal(y0.shape, dtype=np.float32)
            flops = 2 * y0.size * C * KH * KW
            passes = {
                "forward": lambda: nc.conv2d(x, w, padding=pad),
                "input gradient": lambda: nc.conv2d_backward_input(dy, w, x.shape, padding=pad),
                "weight gradient": lambda: nc.conv2d_backward_weight(dy, x, (KH, KW),
                                                                     padding=pad),
            }
            want = None
            for kernel in args.kernels:              # compile, and check against the first
                config.CPU_CONV_KERNEL = kernel
                got = [f() for f in passes.values()]
                if want is None:
                    want = got
                for p_name, a, b in zip(passes, got, want):
                    err = float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))
                    if err > MATCH_TOL:
                        sys.exit(f"{name}: the {kernel} kernel's {p_name} differs from the "
                                 f"{args.kernels[0]} kernel's by {err:.1e} (relative)")
            best = {}
            for _ in range(args.rounds):
                for kernel in args.kernels:
                    config.CPU_CONV_KERNEL = kernel
                    for p_name, f in passes.items():
                        t0 = time.perf_counter()
                        f()
                        dt = time.perf_counter() - t0
                        key = (kernel, p_name)
                        best[key] = min(best.get(key, dt), dt)
            for i, kernel in enumerate(args.kernels):
                table.add_row(name if i == 0 else "", kernel,
                              *(f"{flops / best[(kernel, p)] / 1e9:.1f}" for p in passes))
            console.print(f"{name}: {N}x{C}x{H}x{W} * {O}x{C}x{KH}x{KW} pad {pad} done")
    finally:
        config.CPU_CONV_KERNEL = saved
    console.print(table)


if __name__ == "__main__":
    main()
