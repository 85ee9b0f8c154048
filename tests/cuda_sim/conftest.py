"""The CUDA kernels under Numba's CUDA simulator. Run only by tests/test_cuda_sim.py, in a process
started with NUMBA_ENABLE_CUDASIM=1 (the simulator must be chosen before numba is imported); a
plain `pytest` run skips collecting this folder, so its own process keeps the real numba."""
import os
import sys
from pathlib import Path

import pytest

if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
    collect_ignore_glob = ["test_*.py"]
else:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # tests/: kernel_helpers

    # Small enough that the tiny test shapes span several blocks, tiles and weight-gradient
    # segments, and end in partial ones; none a power of two, so no code may rely on one.
    SMALL = dict(CUDA_THREADS_PER_BLOCK=7, CUDA_TILE=3, CUDA_WGRAD_SEGMENT=16)

    # The simulator runs each CUDA thread as a Python thread and releases a block from
    # syncthreads() by polling; a shorter GIL switch interval makes that polling several times
    # faster (the tiled kernel syncs twice per step), and changes nothing else.
    sys.setswitchinterval(5e-4)

    def pytest_configure(config):
        # The dropout generator's uint64 products wrap by design; run as Python (as the simulator
        # runs device functions) NumPy warns about each one.
        config.addinivalue_line("filterwarnings",
                                "ignore:overflow encountered in scalar multiply:RuntimeWarning")

    @pytest.fixture(autouse=True)
    def small_launches(monkeypatch):
        from numconv import config
        for name, value in SMALL.items():
            monkeypatch.setattr(config, name, value)
        yield SMALL
