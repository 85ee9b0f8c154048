"""The CUDA kernels against the reference under Numba's CUDA simulator, in a child process.

The simulator must be chosen (NUMBA_ENABLE_CUDASIM=1) before numba is imported, and this process
keeps the real numba for every other test, so the checks in tests/cuda_sim/ run in a `pytest`
child with the variable set. They patch the block sizes small so that tiny inputs span several
blocks, tiles and segments (tests/cuda_sim/conftest.py). About 3 minutes on a busy two-core
machine (the simulator runs each CUDA thread as Python).
"""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_cuda_kernels_under_the_simulator():
    if importlib.util.find_spec("numba_cuda") is None:
        pytest.skip("numba-cuda is not installed (pip install 'numconv[cuda]')")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
           str(ROOT / "tests" / "cuda_sim")]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{out[-20000:]}"
    assert " passed" in out and " skipped" not in out, out[-5000:]
