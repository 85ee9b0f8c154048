"""Cold and warm start of `numconv gradcheck --op conv2d`: what numba's compile cache saves.

    python benchmarks/bench_startup.py [--timeout SECONDS] [--keep-cache]

Runs the command twice as a subprocess, both times with NUMBA_CACHE_DIR pointing at one fresh
temporary directory:
- cold: the cache is empty, so every kernel the command touches is compiled;
- warm: a second process, same cache directory, so the kernels load from the cache.
It prints both wall times (process start to exit, imports included). If the `numconv` command is not
on PATH, or fails, it falls back to `python -m cli.main gradcheck --op conv2d` run from the repository
root, and says which command ran. If that fails too it prints the tail of the command's stderr and
exits with status 1.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ARGS = ["gradcheck", "--op", "conv2d"]
TAIL_LINES = 20


def candidate_commands():
    """(label, argv) pairs to try in order: the installed script, then the module in this checkout."""
    cands = []
    exe = shutil.which("numconv")
    if exe is not None:
        cands.append(("numconv " + " ".join(ARGS), [exe, *ARGS]))
    cands.append((f"{Path(sys.executable).name} -m cli.main " + " ".join(ARGS),
                  [sys.executable, "-m", "cli.main", *ARGS]))
    return cands, exe


def run_once(argv, cache_dir, timeout):
    """(wall seconds, CompletedProcess) of one run with NUMBA_CACHE_DIR=cache_dir."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir))
    # The module fallback imports cli/ and numconv/ from the checkout, installed or not.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    return time.perf_counter() - t0, proc


def tail(text, n=TAIL_LINES):
    if isinstance(text, bytes):   # TimeoutExpired carries bytes even with text=True
        text = text.decode(errors="replace")
    lines = (text or "").rstrip().splitlines()
    return "\n".join(lines[-n:]) if lines else "(empty)"


def describe_failure(label, proc, seconds):
    return (f"`{label}` failed with exit status {proc.returncode} after {seconds:.1f} s.\n"
            f"--- stderr (last {TAIL_LINES} lines) ---\n{tail(proc.stderr)}\n"
            f"--- stdout (last {TAIL_LINES} lines) ---\n{tail(proc.stdout)}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--timeout", type=float, default=900,
                   help="seconds each run may take before it counts as failed (default 900)")
    p.add_argument("--keep-cache", action="store_true",
                   help="keep the temporary NUMBA_CACHE_DIR and print its path (default: delete it)")
    args = p.parse_args(argv)

    cands, exe = candidate_commands()
    if exe is None:
        print("note: `numconv` is not on PATH; using the module in this checkout")

    cache_root = Path(tempfile.mkdtemp(prefix="numconv-startup-"))
    try:
        failures = []
        for i, (label, cmd) in enumerate(cands):
            then = "; trying the fallback" if i < len(cands) - 1 else ""
            # A fresh cache per candidate: a failed attempt may have filled part of the cache.
            cache_dir = cache_root / f"cache{len(failures)}"
            cache_dir.mkdir()
            print(f"running: {label}   (NUMBA_CACHE_DIR={cache_dir})", flush=True)
            try:
                cold_s, proc = run_once(cmd, cache_dir, args.timeout)
            except subprocess.TimeoutExpired as exc:
                failures.append(f"`{label}` timed out after {args.timeout:g} s.\n"
                                f"--- stderr (last {TAIL_LINES} lines) ---\n"
                                f"{tail(exc.stderr)}")
                print(f"  failed (timeout){then}", flush=True)
                continue
            if proc.returncode != 0:
                failures.append(describe_failure(label, proc, cold_s))
                print(f"  failed (exit {proc.returncode}){then}", flush=True)
                continue
            cached = sum(1 for _ in cache_dir.rglob("*.nbi"))
            warm_s, proc2 = run_once(cmd, cache_dir, args.timeout)
            if proc2.returncode != 0:
                print("error: the warm run failed although the cold run passed.", file=sys.stderr)
                print(describe_failure(label, proc2, warm_s), file=sys.stderr)
                return 1
            print(f"command: {label}")
            print(f"cold (empty cache, compiles):     {cold_s:7.2f} s   "
                  f"({cached} kernel index files cached)")
            print(f"warm (second process, same cache): {warm_s:6.2f} s")
            print(f"cache saves {cold_s - warm_s:.2f} s ({cold_s / warm_s:.1f}x faster warm start)")
            if args.keep_cache:
                print(f"cache kept at {cache_dir}")
            return 0
        print("error: no gradcheck command ran successfully.", file=sys.stderr)
        for f in failures:
            print(f, file=sys.stderr)
        return 1
    finally:
        if not args.keep_cache:
            shutil.rmtree(cache_root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
