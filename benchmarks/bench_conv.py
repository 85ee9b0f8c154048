"""numconv vs PyTorch (CPU, float32) on the convolution layers of classic CNNs.

    python benchmarks/bench_conv.py [--repeat N] [--warmup N] [--threads T] [--layers NAME,...]
                                    [--threading-layer L] [--schedule interleaved|blocks]
                                    [--seed S] [--json PATH]

For every layer it measures
- forward: y = conv(x, w, b)                         (PyTorch under torch.no_grad())
- forward + backward: y, then dx, dw and db from dy  (PyTorch through autograd, y.backward(dy))
and reports the median wall time of --repeat runs taken after --warmup untimed runs (the first call
compiles numconv's kernels; compilation is never timed). Throughput counts the multiply-adds of the
convolution only: forward 2*N*O*OH*OW*Cg*KH*KW FLOPs, forward + backward three times that (the two
gradients each cost one forward). `ratio` is numconv's throughput over PyTorch's; a layer meets the
target when both ratios are >= 0.8.

Before timing a layer the script checks once that numconv's y, dx, dw and db match PyTorch's (max abs
difference relative to the max abs value of PyTorch's result < 1e-4) and stops with an error if not:
a fast wrong answer is not a result.

numba runs on its own default threading layer ('omp' here) unless --threading-layer names another.
Early runs of this script aborted with "malloc(): unsorted double linked list corrupted" inside the
weight gradient of AlexNet's conv2; that was an im2col write past its buffer (fixed, and pinned by
tests/test_reference_and_parity.py), not, as first suspected, the two GNU OpenMP runtimes that numba
and torch each load. Runs on 'omp' with torch in the same process have been clean since.

Both libraries get the same arrays (torch.from_numpy shares the memory) and the same thread count
(numba.set_num_threads, torch.set_num_threads). Under --schedule interleaved (the default) the two
libraries take turns, --repeat turns each per measurement, the first library alternating: a turn
is a short pause (SWITCH_PAUSE_S, so the other library's idle-spinning OpenMP workers have gone
to sleep and steal no core), one untimed call (the turn's own workers wake up) and one timed
call. A slow spell of the host (these VMs slow down by up to 2x for seconds at a time, unseen in
/proc/stat) then falls on both libraries' samples alike instead of on one library's block.
Under --schedule blocks each library's runs for a layer are timed back to back as one block,
with a pause between blocks (the method of the earlier BENCHMARKS.md tables). The last column,
"busy elsewhere", is how many cores other processes kept busy while a layer was timed (from
/proc/stat); above 0.25 the script warns, because
a shared machine slows the two libraries by different amounts (torch's OpenMP barriers suffer most).
"""
import argparse
import faulthandler
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

TARGET_RATIO = 0.8      # numconv throughput / PyTorch throughput a layer should reach
MATCH_TOL = 1e-4        # max |numconv - torch| / max |torch| for the one-off check
BUSY_WARN = 0.25        # cores kept busy by other processes while timing: above this, distrust it
PAUSE_S = 0.2           # between timing blocks: lets the other library's worker threads go idle
SWITCH_PAUSE_S = 0.02   # before each interleaved turn: the same, for spin-waits (libgomp: ~ms)


@dataclass(frozen=True)
class Layer:
    """One convolution: x (N, C, *spatial), w (O, C, *kernel), stride 1, dilation 1, groups 1."""
    name: str
    origin: str
    N: int
    C: int
    spatial: tuple      # (H, W) or (L,)
    O: int
    kernel: tuple       # (KH, KW) or (K,)
    padding: int

    @property
    def nd(self):
        return len(self.spatial)

    @property
    def out_spatial(self):
        return tuple(n + 2 * self.padding - k + 1 for n, k in zip(self.spatial, self.kernel))

    def flops_forward(self):
        flops = 2 * self.N * self.O * self.C
        for o, k in zip(self.out_spatial, self.kernel):
            flops *= o * k
        return flops

    def shape_text(self):
        dims = lambda *d: "x".join(str(v) for v in d)  # noqa: E731
        pad = f" p{self.padding}" if self.padding else ""
        return (f"{dims(self.N, self.C, *self.spatial)} * {dims(self.O, self.C, *self.kernel)}{pad}"
                f" -> {dims(self.N, self.O, *self.out_spatial)}")


LAYERS = [
    Layer("lenet-c1-n64", "LeNet-5 C1", 64, 1, (32, 32), 6, (5, 5), 0),
    Layer("lenet-c1-n256", "LeNet-5 C1", 256, 1, (32, 32), 6, (5, 5), 0),
    Layer("lenet-c3-n64", "LeNet-5 C3", 64, 6, (14, 14), 16, (5, 5), 0),
    Layer("lenet-c3-n256", "LeNet-5 C3", 256, 6, (14, 14), 16, (5, 5), 0),
    Layer("cifar-conv1", "CIFAR CNN first layer", 128, 3, (32, 32), 64, (3, 3), 1),
    Layer("resnet-conv2", "ResNet conv2_x 3x3", 128, 64, (56, 56), 64, (3, 3), 1),
    Layer("alexnet-conv2", "AlexNet conv2 (ungrouped)", 64, 96, (27, 27), 256, (5, 5), 2),
    Layer("kim-k3", "Kim CNN, width 3", 50, 300, (60,), 100, (3,), 0),
    Layer("kim-k4", "Kim CNN, width 4", 50, 300, (60,), 100, (4,), 0),
    Layer("kim-k5", "Kim CNN, width 5", 50, 300, (60,), 100, (5,), 0),
]
LAYERS_BY_NAME = {layer.name: layer for layer in LAYERS}


def parse_args(argv=None):
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=5,
                   help="timed runs per measurement; the median is reported (default 5)")
    p.add_argument("--warmup", type=int, default=1,
                   help="untimed runs before the timed ones, per measurement (default 1)")
    p.add_argument("--threads", type=int, default=usable,
                   help=f"threads for both numba and torch (default: all usable cores, {usable})")
    p.add_argument("--layers", default=None,
                   help="comma-separated layer names to run (default: all): "
                        + ", ".join(LAYERS_BY_NAME))
    p.add_argument("--threading-layer", default="default",
                   choices=("workqueue", "omp", "tbb", "default"),
                   help="numba threading layer (default: numba's own choice, 'omp' here)")
    p.add_argument("--schedule", default="interleaved", choices=("interleaved", "blocks"),
                   help="interleaved: the libraries take turns, one timed call a turn (default); "
                        "blocks: each library's runs back to back")
    p.add_argument("--seed", type=int, default=0, help="seed for the random inputs (default 0)")
    p.add_argument("--json", type=Path, default=None, metavar="PATH",
                   help="also write the results as JSON to PATH")
    args = p.parse_args(argv)
    if args.repeat < 1:
        p.error(f"--repeat must be >= 1, got {args.repeat}")
    if args.warmup < 1:
        p.error(f"--warmup must be >= 1 (the first call compiles), got {args.warmup}")
    if args.threads < 1:
        p.error(f"--threads must be >= 1, got {args.threads}")
    if args.layers is None:
        args.layers = list(LAYERS)
    else:
        names = [n.strip() for n in args.layers.split(",") if n.strip()]
        unknown = [n for n in names if n not in LAYERS_BY_NAME]
        if unknown or not names:
            p.error(f"unknown layer(s) {', '.join(unknown) or repr(args.layers)}; choose from "
                    f"{', '.join(LAYERS_BY_NAME)}")
        args.layers = [LAYERS_BY_NAME[n] for n in names]
    args.usable_cores = usable
    return args


# ----------------------------------------------------------------------------------------------
# Machine
# ----------------------------------------------------------------------------------------------

def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_info(args):
    import numba
    import numpy as np
    import torch
    return {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cores": args.usable_cores,
        "threads": args.threads,
        "numba_threading_layer": numba.threading_layer(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "torch": torch.__version__,
        "torch_mkldnn": bool(torch.backends.mkldnn.is_available()),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


# ----------------------------------------------------------------------------------------------
# The two implementations, as callables over one layer's data
# ----------------------------------------------------------------------------------------------

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


def numconv_fns(layer, x, w, b, dy):
    import numconv as nc
    if layer.nd == 2:
        fwd, bwd_in, bwd_w, bwd_b = (nc.conv2d, nc.conv2d_backward_input,
                                     nc.conv2d_backward_weight, nc.conv2d_backward_bias)
    else:
        fwd, bwd_in, bwd_w, bwd_b = (nc.conv1d, nc.conv1d_backward_input,
                                     nc.conv1d_backward_weight, nc.conv1d_backward_bias)
    pad = layer.padding

    def forward():
        return fwd(x, w, b, padding=pad)

    def forward_backward():
        y = fwd(x, w, b, padding=pad)
        dx = bwd_in(dy, w, x.shape, padding=pad)
        dw = bwd_w(dy, x, layer.kernel, padding=pad)
        db = bwd_b(dy)
        return y, dx, dw, db

    return forward, forward_backward


def torch_fns(layer, x, w, b, dy):
    import torch
    import torch.nn.functional as F
    conv = F.conv2d if layer.nd == 2 else F.conv1d
    tx, tdy = torch.from_numpy(x), torch.from_numpy(dy)
    tw, tb = torch.from_numpy(w), torch.from_numpy(b)
    gx = tx.detach().requires_grad_(True)
    gw = tw.detach().requires_grad_(True)
    gb = tb.detach().requires_grad_(True)
    pad = layer.padding

    def forward():
        with torch.no_grad():
            return conv(tx, tw, tb, padding=pad)

    def forward_backward():
        gx.grad = gw.grad = gb.grad = None   # fresh gradients each run, as numconv allocates
        y = conv(gx, gw, gb, padding=pad)
        y.backward(tdy)
        return y.detach(), gx.grad, gw.grad, gb.grad

    return forward, forward_backward


def check_match(layer, nc_out, torch_out):
    """Max relative difference per result; raises SystemExit naming the first one that differs."""
    import numpy as np
    diffs = {}
    for name, ours, theirs in zip(("y", "dx", "dw", "db"), nc_out, torch_out):
        theirs = theirs.numpy()
        if ours.shape != theirs.shape:
            raise SystemExit(f"error: {layer.name}: numconv's {name} has shape {ours.shape}, "
                             f"PyTorch's {theirs.shape}")
        scale = float(np.max(np.abs(theirs))) or 1.0
        diffs[name] = float(np.max(np.abs(ours.astype(np.float64) - theirs))) / scale
        if not diffs[name] < MATCH_TOL:   # also catches NaN
            raise SystemExit(
                f"error: {layer.name} ({layer.shape_text()}): numconv's {name} does not match "
                f"PyTorch's: max |diff| / max |torch| = {diffs[name]:.3g} >= {MATCH_TOL:g}. "
                f"Benchmark aborted; fix the kernel (compare against numconv.kernels.reference).")
    return diffs


def _cpu_snapshot():
    """(busy CPU seconds of the whole machine, CPU seconds of this process), or None off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)         # idle + iowait
    busy = (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")      # user..steal
    t = os.times()
    return busy, t.user + t.system


def time_block(fn, warmup, repeat):
    """Median wall time in seconds of `repeat` calls after `warmup` untimed ones, and all times."""
    import gc
    for _ in range(warmup):
        fn()
    gc.collect()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    time.sleep(PAUSE_S)
    return statistics.median(times), times


def time_interleaved(fns, warmup, repeat):
    """{library: (median wall time, all times)} for the functions of `fns` ({library: fn}), timed
    in turns: `repeat` turns each, the first library alternating from turn to turn, each turn a
    pause of SWITCH_PAUSE_S, one untimed call and one timed call; `warmup` untimed calls of
    each first."""
    import gc
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    gc.collect()
    names = list(fns)
    times = {name: [] for name in names}
    for turn in range(repeat):
        for name in (names if turn % 2 == 0 else names[::-1]):
            time.sleep(SWITCH_PAUSE_S)
            fns[name]()
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
    time.sleep(PAUSE_S)
    return {name: (statistics.median(ts), ts) for name, ts in times.items()}


def bench_layer(layer, args):
    x, w, b, dy = make_data(layer, args.seed)
    nc_fwd, nc_fb = numconv_fns(layer, x, w, b, dy)
    t_fwd, t_fb = torch_fns(layer, x, w, b, dy)

    diffs = check_match(layer, nc_fb(), t_fb())    # also warms both up (numba compiles here)
    time.sleep(PAUSE_S)

    flops = layer.flops_forward()
    res = {"layer": layer.name, "origin": layer.origin, "shape": layer.shape_text(),
           "N": layer.N, "C": layer.C, "spatial": list(layer.spatial), "O": layer.O,
           "kernel": list(layer.kernel), "padding": layer.padding,
           "flops_forward": flops, "flops_forward_backward": 3 * flops, "max_rel_diff": diffs}
    before, t_start = _cpu_snapshot(), time.perf_counter()
    if args.schedule == "interleaved":
        fwd_t = time_interleaved({"numconv": nc_fwd, "torch": t_fwd}, args.warmup, args.repeat)
        fb_t = time_interleaved({"numconv": nc_fb, "torch": t_fb}, args.warmup, args.repeat)
    else:
        fwd_t, fb_t = {}, {}
        for lib, fwd, fb in (("numconv", nc_fwd, nc_fb), ("torch", t_fwd, t_fb)):
            fwd_t[lib] = time_block(fwd, args.warmup, args.repeat)
            fb_t[lib] = time_block(fb, args.warmup, args.repeat)
    for lib in ("numconv", "torch"):
        (med_f, times_f), (med_fb, times_fb) = fwd_t[lib], fb_t[lib]
        res[lib] = {"forward_s": med_f, "forward_times_s": times_f,
                    "forward_gflops": flops / med_f / 1e9,
                    "forward_backward_s": med_fb, "forward_backward_times_s": times_fb,
                    "forward_backward_gflops": 3 * flops / med_fb / 1e9}
    res["ratio_forward"] = res["numconv"]["forward_gflops"] / res["torch"]["forward_gflops"]
    res["ratio_forward_backward"] = (res["numconv"]["forward_backward_gflops"]
                                     / res["torch"]["forward_backward_gflops"])
    after, wall = _cpu_snapshot(), time.perf_counter() - t_start
    # Over the whole timing section (>= 4 pauses long), so /proc/stat's 10 ms ticks stay small.
    res["other_cores_busy"] = (None if before is None or after is None else
                               max(0.0, ((after[0] - before[0]) - (after[1] - before[1])) / wall))
    res["meets_target"] = (res["ratio_forward"] >= TARGET_RATIO
                           and res["ratio_forward_backward"] >= TARGET_RATIO)
    return res


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------

def render_header(console, info, args):
    console.print("[bold]numconv vs PyTorch CPU, float32 convolution[/bold]")
    console.print(f"CPU: {info['cpu']}  ({info['logical_cpus']} logical CPUs, "
                  f"{info['usable_cores']} usable)")
    console.print(f"threads: {info['threads']} (numba, threading layer "
                  f"'{info['numba_threading_layer']}'; torch)")
    console.print(f"python {info['python']}, numpy {info['numpy']}, numba {info['numba']}, "
                  f"torch {info['torch']} (mkldnn {'on' if info['torch_mkldnn'] else 'off'})")
    if info["load_average"] is not None:
        console.print("load average before the run (1, 5, 15 min): "
                      + ", ".join(f"{v:.2f}" for v in info["load_average"])
                      + "  (other work on the machine skews timings)")
    how = ("in turns with PyTorch (one timed call a turn)" if args.schedule == "interleaved"
           else "in one block per library")
    console.print(f"median of {args.repeat} runs after {args.warmup} warm-up run(s), {how}; "
                  f"seed {args.seed}\n")


def render_table(results):
    from rich.table import Table
    table = Table(title=f"GFLOP/s (forward 2*N*O*OH*OW*Cg*KH*KW; fwd+bwd 3x); target ratio "
                        f">= {TARGET_RATIO}")
    table.add_column("layer", no_wrap=True)
    table.add_column("shape", no_wrap=True)
    for head in ("numconv fwd", "torch fwd", "ratio", "numconv f+b", "torch f+b", "ratio"):
        table.add_column(head, justify="right")
    table.add_column("verdict", no_wrap=True)
    table.add_column("busy elsewhere", justify="right")

    def ratio(r):
        style = "green" if r >= TARGET_RATIO else "red"
        return f"[{style}]{r:.2f}[/{style}]"

    for r in results:
        nc, th = r["numconv"], r["torch"]
        verdict = "[green]ok[/green]" if r["meets_target"] else "[red]below target[/red]"
        busy = r["other_cores_busy"]
        busy_text = ("n/a" if busy is None else f"[yellow]{busy:.2f}[/yellow]" if busy > BUSY_WARN
                     else f"{busy:.2f}")
        table.add_row(r["layer"], r["shape"],
                      f"{nc['forward_gflops']:.1f}", f"{th['forward_gflops']:.1f}",
                      ratio(r["ratio_forward"]),
                      f"{nc['forward_backward_gflops']:.1f}",
                      f"{th['forward_backward_gflops']:.1f}",
                      ratio(r["ratio_forward_backward"]), verdict, busy_text)
    return table


def main(argv=None):
    faulthandler.enable()   # a crash inside a native kernel still names the layer and call
    args = parse_args(argv)
    if args.threads > args.usable_cores:
        # numba refuses set_num_threads above NUMBA_NUM_THREADS, fixed when numba is imported
        os.environ["NUMBA_NUM_THREADS"] = str(args.threads)
    if args.threading_layer != "default":
        os.environ["NUMBA_THREADING_LAYER"] = args.threading_layer   # read when numba is imported

    import numba
    import numpy as np
    import torch
    from rich.console import Console

    import numconv as nc

    console = Console()
    if not console.is_terminal:   # piped or redirected: rich would wrap the table at 80 columns
        console = Console(width=200)
    numba.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)

    # Compile (or load from numba's cache) the float32 kernels once, untimed, before anything else.
    with console.status("compiling numconv kernels (not timed)..."):
        t0 = time.perf_counter()
        x = np.ones((1, 1, 4, 4), np.float32)
        w = np.ones((1, 1, 3, 3), np.float32)
        b = np.zeros(1, np.float32)
        dy = nc.conv2d(x, w, b)
        nc.conv2d_backward_input(dy, w, x.shape)
        nc.conv2d_backward_weight(dy, x, (3, 3))
        nc.conv2d_backward_bias(dy)
        x1 = x[:, :, 0]
        dy1 = nc.conv1d(x1, w[:, :, 0], b)
        nc.conv1d_backward_input(dy1, w[:, :, 0], x1.shape)
        nc.conv1d_backward_weight(dy1, x1, 3)
        nc.conv1d_backward_bias(dy1)
        compile_s = time.perf_counter() - t0

    info = machine_info(args)
    render_header(console, info, args)
    console.print(f"numconv kernels ready in {compile_s:.1f} s (compile or cache load, not timed)")

    results = []
    for i, layer in enumerate(args.layers, 1):
        with console.status(f"[{i}/{len(args.layers)}] {layer.name}: {layer.shape_text()}"):
            r = bench_layer(layer, args)
        results.append(r)
        d = r["max_rel_diff"]
        console.print(
            f"[{i}/{len(args.layers)}] {layer.name}: matches torch (max rel diff y {d['y']:.1e}, "
            f"dx {d['dx']:.1e}, dw {d['dw']:.1e}, db {d['db']:.1e}); fwd "
            f"{r['numconv']['forward_s'] * 1e3:.2f} ms vs {r['torch']['forward_s'] * 1e3:.2f} ms, "
            f"fwd+bwd {r['numconv']['forward_backward_s'] * 1e3:.2f} ms vs "
            f"{r['torch']['forward_backward_s'] * 1e3:.2f} ms")

    console.print()
    console.print(render_table(results))
    met = sum(r["meets_target"] for r in results)
    console.print("busy elsewhere: average cores other processes kept busy while the layer was "
                  "timed (/proc/stat minus this process)")
    noisy = [r["layer"] for r in results
             if r["other_cores_busy"] is not None and r["other_cores_busy"] > BUSY_WARN]
    if noisy:
        console.print(f"[yellow]warning: other processes used > {BUSY_WARN} cores while "
                      f"{', '.join(noisy)} were timed; those numbers understate both libraries "
                      f"unevenly. Rerun on an idle machine.[/yellow]")
    console.print(f"{met}/{len(results)} layers reach numconv/torch >= {TARGET_RATIO} in both "
                  f"forward and forward+backward")

    if args.json is not None:
        payload = {"machine": info, "settings": {"repeat": args.repeat, "warmup": args.warmup,
                                                 "schedule": args.schedule,
                                                 "threading_layer": args.threading_layer,
                                                 "seed": args.seed, "target_ratio": TARGET_RATIO,
                                                 "match_tol": MATCH_TOL},
                   "compile_s": compile_s, "results": results}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        console.print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
