"""numconv's CUDA kernels vs PyTorch + cuDNN (float32) on the convolution layers of bench_conv.py.

    python benchmarks/bench_gpu.py [--repeat N] [--warmup N] [--layers NAME,...]
                                   [--forward tiled|direct|both] [--tf32] [--no-cudnn-benchmark]
                                   [--seed S] [--json PATH]

Needs an NVIDIA GPU, numba-cuda (pip install 'numconv[cuda]') and a CUDA build of PyTorch; without
them it stops with one line saying which is missing. Same layers as benchmarks/bench_conv.py.

For every layer, with all arrays already on the GPU (numba device arrays for numconv, CUDA tensors
for PyTorch; nothing crosses to the host while timing), it measures
- forward: y = conv(x, w, b)
- forward + backward: y, then dx, dw and db from dy (PyTorch: autograd, y.backward(dy))
as the median of --repeat runs after --warmup untimed ones (the first call compiles numconv's
kernels, never timed), each run bracketed by a device synchronisation. GFLOP/s count the
convolution's multiply-adds: forward 2*N*O*OH*OW*Cg*KH*KW, forward + backward three times that.
`ratio` is numconv's throughput over cuDNN's; the issue's target is within 3x (ratio >= 0.33).

PyTorch lets cuDNN use TF32 tensor cores for float32 convolutions by default; this script turns that
off (both sides then compute in float32) unless --tf32 is given. cudnn.benchmark (autotuned
algorithms) is on unless --no-cudnn-benchmark. Before timing a layer, numconv's y, dx, dw and db are
checked once against PyTorch's (max |diff| / max |torch| < 1e-4, or 1e-2 with --tf32); a mismatch
stops the run.
"""
import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled
sys.path.insert(0, str(Path(__file__).resolve().parent))       # bench_conv: the layer list

import numpy as np  # noqa: E402
from bench_conv import LAYERS, LAYERS_BY_NAME  # noqa: E402

TARGET_RATIO = 1 / 3    # the issue: within 3x of cuDNN
MATCH_TOL = 1e-4
MATCH_TOL_TF32 = 1e-2


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=20,
                   help="timed runs per measurement; the median is reported (default 20)")
    p.add_argument("--warmup", type=int, default=3,
                   help="untimed runs before the timed ones (default 3; the first compiles)")
    p.add_argument("--layers", default=None,
                   help="comma-separated layer names (default: all): " + ", ".join(LAYERS_BY_NAME))
    p.add_argument("--forward", choices=("tiled", "direct", "both"), default="both",
                   help="numconv's forward kernel: the shared-memory tiled one (the default in "
                        "numconv.config), the direct one, or both as separate rows (default both)")
    p.add_argument("--tf32", action="store_true",
                   help="let cuDNN use TF32 tensor cores (PyTorch's default; off here so that both "
                        "sides compute in float32)")
    p.add_argument("--no-cudnn-benchmark", action="store_true",
                   help="do not let cuDNN autotune its algorithm per shape")
    p.add_argument("--seed", type=int, default=0, help="seed for the random inputs (default 0)")
    p.add_argument("--json", type=Path, default=None, metavar="PATH",
                   help="also write the results as JSON to PATH")
    args = p.parse_args(argv)
    if args.repeat < 1:
        p.error(f"--repeat must be >= 1, got {args.repeat}")
    if args.warmup < 1:
        p.error(f"--warmup must be >= 1 (the first call compiles), got {args.warmup}")
    if args.layers is None:
        args.layers = list(LAYERS)
    else:
        names = [n.strip() for n in args.layers.split(",") if n.strip()]
        unknown = [n for n in names if n not in LAYERS_BY_NAME]
        if unknown or not names:
            p.error(f"unknown layer(s) {', '.join(unknown) or repr(args.layers)}; choose from "
                    f"{', '.join(LAYERS_BY_NAME)}")
        args.layers = [LAYERS_BY_NAME[n] for n in names]
    return args


def require_gpu(simulate=False):
    """Stop with one line unless numconv's CUDA kernels and PyTorch's CUDA both work here; with
    `simulate` (a smoke test), require the CUDA simulator instead and let PyTorch run on the CPU.
    -> the torch module."""
    import os

    from numconv.ops._device import cuda_unavailable_reason
    simulated = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
    if simulate and not simulated:
        raise SystemExit("error: --simulate needs NUMBA_ENABLE_CUDASIM=1 in the environment")
    if simulated and not simulate:
        raise SystemExit("error: NUMBA_ENABLE_CUDASIM=1 runs the kernels in the CUDA simulator, "
                         "whose timings mean nothing; unset it and run on a GPU")
    reason = cuda_unavailable_reason()
    if reason is not None:
        raise SystemExit(f"error: this benchmark needs an NVIDIA GPU: {reason}")
    try:
        import torch
    except ImportError:
        raise SystemExit("error: PyTorch is not installed; pip install torch (a CUDA build)") \
            from None
    if not simulate and not torch.cuda.is_available():
        raise SystemExit(f"error: PyTorch {torch.__version__} sees no GPU (a CPU-only build, or "
                         f"no driver); install a CUDA build of torch")
    return torch


def machine_info(args):
    import numba
    import numba_cuda
    import numpy as np
    import torch
    from numba import cuda
    dev = cuda.get_current_device()

    def version(get):
        try:
            return get()
        except Exception as exc:   # informative only
            return f"unknown ({type(exc).__name__})"

    return {
        "gpu": dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name),
        "compute_capability": list(dev.compute_capability),
        "driver_version": version(lambda: cuda.cudadrv.driver.driver.get_version()),
        "cuda_runtime_version": version(lambda: cuda.runtime.get_version()),
        "torch_gpu": torch.cuda.get_device_name(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "numba_cuda": getattr(numba_cuda, "__version__", "?"),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "tf32": bool(args.tf32),
        "cudnn_benchmark": not args.no_cudnn_benchmark,
    }


def make_data(layer, seed):
    import numpy as np
    rng = np.random.default_rng(seed)
    fan_in = layer.C * int(np.prod(layer.kernel))
    x = rng.standard_normal((layer.N, layer.C) + layer.spatial, dtype=np.float32)
    w = (rng.standard_normal((layer.O, layer.C) + layer.kernel, dtype=np.float32)
         / np.float32(np.sqrt(fan_in)))
    b = rng.standard_normal(layer.O, dtype=np.float32) * np.float32(0.1)
    dy = rng.standard_normal((layer.N, layer.O) + layer.out_spatial, dtype=np.float32)
    return x, w, b, dy


def as4d(a):
    return a.reshape(a.shape[:2] + (1,) + a.shape[2:]) if a.ndim == 3 else a


def numconv_fns(layer, x, w, b, dy, forward_kind):
    """Callables over device-resident data, calling the CUDA launchers directly (no host copies)."""
    from numba import cuda

    from numconv import config
    from numconv.kernels import cuda as gpu
    x4, w4, dy4 = as4d(x), as4d(w), as4d(dy)
    d_x, d_w, d_b, d_dy = (cuda.to_device(a) for a in (x4, w4, b, dy4))
    d_y = cuda.device_array(dy4.shape, np.float32)
    d_dx = cuda.device_array(x4.shape, np.float32)
    d_dw = cuda.device_array(w4.shape, np.float32)
    d_db = cuda.device_array(b.shape, np.float32)
    pad = layer.padding
    opts = (1, 1, pad if layer.nd == 2 else 0, pad, 1, 1, 1)   # sh, sw, pt, pl, dh, dw, groups

    def forward():
        config.CUDA_CONV_FORWARD = forward_kind
        gpu.conv2d_forward(d_y, d_x, d_w, d_b, *opts)

    def forward_backward():
        forward()
        gpu.conv2d_backward_input(d_dx, d_dy, d_w, *opts)
        gpu.conv2d_backward_weight(d_dw, d_dy, d_x, *opts)
        gpu.conv2d_backward_bias(d_db, d_dy)

    def results():
        return tuple(a.copy_to_host().reshape(s) for a, s in
                     ((d_y, dy.shape), (d_dx, x.shape), (d_dw, w.shape), (d_db, b.shape)))

    return forward, forward_backward, results


def torch_fns(layer, x, w, b, dy):
    import torch
    import torch.nn.functional as F
    conv = F.conv2d if layer.nd == 2 else F.conv1d
    dev = torch.device("cuda")
    tx, tw, tb, tdy = (torch.from_numpy(a).to(dev) for a in (x, w, b, dy))
    gx, gw, gb = (t.detach().requires_grad_(True) for t in (tx, tw, tb))
    pad = layer.padding
    out = {}

    def forward():
        with torch.no_grad():
            out["y"] = conv(tx, tw, tb, padding=pad)

    def forward_backward():
        gx.grad = gw.grad = gb.grad = None
        y = conv(gx, gw, gb, padding=pad)
        y.backward(tdy)
        out["y"] = y.detach()

    def results():
        return tuple(t.cpu().numpy() for t in (out["y"], gx.grad, gw.grad, gb.grad))

    return forward, forward_backward, results


def sync():
    import torch
    from numba import cuda
    cuda.synchronize()
    torch.cuda.synchronize()


def time_block(fn, warmup, repeat):
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeat):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def check_match(layer, ours, theirs, tol):
    diffs = {}
    for name, a, t in zip(("y", "dx", "dw", "db"), ours, theirs):
        scale = float(np.max(np.abs(t))) or 1.0
        diffs[name] = float(np.max(np.abs(a.astype(np.float64) - t))) / scale
        if not diffs[name] < tol:
            raise SystemExit(f"error: {layer.name} ({layer.shape_text()}): numconv's CUDA {name} "
                             f"does not match PyTorch's: max |diff| / max |torch| = "
                             f"{diffs[name]:.3g} >= {tol:g}. Benchmark aborted.")
    return diffs


def bench_layer(layer, args, kinds):
    x, w, b, dy = make_data(layer, args.seed)
    flops = layer.flops_forward()
    res = {"layer": layer.name, "origin": layer.origin, "shape": layer.shape_text(),
           "flops_forward": flops, "flops_forward_backward": 3 * flops}
    t_fwd, t_fb, t_res = torch_fns(layer, x, w, b, dy)
    t_fb()
    theirs = t_res()
    tol = MATCH_TOL_TF32 if args.tf32 else MATCH_TOL
    for kind in kinds:
        fwd, fb, ours = numconv_fns(layer, x, w, b, dy, kind)
        fb()                         # compiles on the first layer
        sync()
        res[f"max_rel_diff_{kind}"] = check_match(layer, ours(), theirs, tol)
        med_f, times_f = time_block(fwd, args.warmup, args.repeat)
        med_fb, times_fb = time_block(fb, args.warmup, args.repeat)
        res[f"numconv_{kind}"] = {"forward_s": med_f, "forward_times_s": times_f,
                                  "forward_gflops": flops / med_f / 1e9,
                                  "forward_backward_s": med_fb,
                                  "forward_backward_times_s": times_fb,
                                  "forward_backward_gflops": 3 * flops / med_fb / 1e9}
    med_f, times_f = time_block(t_fwd, args.warmup, args.repeat)
    med_fb, times_fb = time_block(t_fb, args.warmup, args.repeat)
    res["torch"] = {"forward_s": med_f, "forward_times_s": times_f,
                    "forward_gflops": flops / med_f / 1e9, "forward_backward_s": med_fb,
                    "forward_backward_times_s": times_fb,
                    "forward_backward_gflops": 3 * flops / med_fb / 1e9}
    return res


def render(console, info, results, kinds, args):
    from rich.table import Table
    console.print(f"[bold]numconv CUDA vs PyTorch {info['torch']} + cuDNN {info['cudnn']}, "
                  f"float32[/bold]")
    console.print(f"GPU: {info['gpu']} (sm_{info['compute_capability'][0]}"
                  f"{info['compute_capability'][1]}), driver {info['driver_version']}, CUDA "
                  f"runtime {info['cuda_runtime_version']}, torch CUDA {info['torch_cuda']}")
    console.print(f"numba {info['numba']}, numba-cuda {info['numba_cuda']}, numpy "
                  f"{info['numpy']}, python {info['python']}; TF32 "
                  f"{'on' if info['tf32'] else 'off'}, cudnn.benchmark "
                  f"{'on' if info['cudnn_benchmark'] else 'off'}; median of {args.repeat} runs")
    table = Table(title=f"GFLOP/s (fwd 2*N*O*OH*OW*Cg*KH*KW, fwd+bwd 3x); target ratio >= "
                        f"{TARGET_RATIO:.2f} (within 3x of cuDNN)")
    table.add_column("layer", no_wrap=True)
    table.add_column("numconv fwd kernel")
    for head in ("numconv fwd", "cuDNN fwd", "ratio", "numconv f+b", "cuDNN f+b", "ratio"):
        table.add_column(head, justify="right")

    def ratio(r):
        style = "green" if r >= TARGET_RATIO else "red"
        return f"[{style}]{r:.2f}[/{style}]"

    for r in results:
        th = r["torch"]
        for kind in kinds:
            nc = r[f"numconv_{kind}"]
            table.add_row(r["layer"], kind, f"{nc['forward_gflops']:.0f}",
                          f"{th['forward_gflops']:.0f}",
                          ratio(nc["forward_gflops"] / th["forward_gflops"]),
                          f"{nc['forward_backward_gflops']:.0f}",
                          f"{th['forward_backward_gflops']:.0f}",
                          ratio(nc["forward_backward_gflops"] / th["forward_backward_gflops"]))
    console.print(table)


def main(argv=None):
    args = parse_args(argv)
    require_gpu()
    import torch
    from rich.console import Console

    torch.backends.cudnn.allow_tf32 = bool(args.tf32)
    torch.backends.cuda.matmul.allow_tf32 = bool(args.tf32)
    torch.backends.cudnn.benchmark = not args.no_cudnn_benchmark
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)
    kinds = ("tiled", "direct") if args.forward == "both" else (args.forward,)
    info = machine_info(args)
    results = []
    for i, layer in enumerate(args.layers, 1):
        with console.status(f"[{i}/{len(args.layers)}] {layer.name}: {layer.shape_text()}"):
            results.append(bench_layer(layer, args, kinds))
        r = results[-1]
        console.print(f"[{i}/{len(args.layers)}] {layer.name}: matches torch; fwd "
                      + ", ".join(f"{k} {r[f'numconv_{k}']['forward_s'] * 1e3:.3f} ms"
                                  for k in kinds)
                      + f" vs cuDNN {r['torch']['forward_s'] * 1e3:.3f} ms")
    render(console, info, results, kinds, args)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": info, "settings": vars(args) | {
            "layers": [layer.name for layer in args.layers], "json": str(args.json)},
            "results": results}, indent=2, default=str) + "\n")
        console.print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
