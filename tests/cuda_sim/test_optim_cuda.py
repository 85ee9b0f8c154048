"""The optimisers on GPU parameters (numconv.kernels.cuda.optim) against the same optimisers on host
parameters (numconv.kernels.optim, itself checked against PyTorch in tests/test_optim.py), under the
CUDA simulator: a few steps, then the state moved to the host and back."""
import numpy as np
import pytest
from numba import cuda

from numconv.optim import make_optimizer
from kernel_helpers import assert_close

CASES = [("sgd", dict(momentum=0.0)), ("sgd", dict(momentum=0.9, weight_decay=1e-2)),
         ("sgd", dict(momentum=0.9, nesterov=True)), ("adam", dict(weight_decay=1e-3)),
         ("adadelta", {})]


def _params(rng, device):
    shapes = {"w": (3, 5), "b": (4,)}    # 15 and 4 elements: several blocks of 7, partial ones
    out = []
    for name, shape in shapes.items():
        p = rng.standard_normal(shape).astype(np.float32)
        g = np.zeros_like(p)
        out.append((name, cuda.to_device(p) if device else p, cuda.to_device(g) if device else g))
    return out


@pytest.mark.parametrize("name, options", CASES, ids=[f"{n}-{o}" for n, o in CASES])
def test_device_updates_match_the_host(name, options):
    host = _params(np.random.default_rng(0), False)
    dev = _params(np.random.default_rng(0), True)
    opt_h = make_optimizer(name, host, 0.1, **options)
    opt_d = make_optimizer(name, dev, 0.1, **options)
    rng = np.random.default_rng(1)
    for step in range(3):
        for (_, _, gh), (_, _, gd) in zip(host, dev):
            gh[...] = rng.standard_normal(gh.shape)
            gd.copy_to_device(gh)
        opt_h.step()
        opt_d.step()
        for (n, ph, _), (_, pd, _) in zip(host, dev):
            assert_close(pd.copy_to_host(), ph, np.float32, err_msg=f"{n}, step {step}")
    state = opt_d.state_dict()
    assert all(isinstance(v, np.ndarray) for v in state.values())
    want = opt_h.state_dict()
    assert state.keys() == want.keys()
    for k in state:
        assert_close(state[k], want[k], np.float32, err_msg=k)
    # a device optimiser resumes from a host checkpoint, and takes the same next step
    copies = [(n, cuda.to_device(p.copy_to_host()), g) for n, p, g in dev]   # same gradients
    again = make_optimizer(name, copies, 0.1, **options)
    again.load_state_dict(state)
    opt_d.step()
    again.step()
    for (_, pa, _), (_, pd, _) in zip(again.params, dev):
        np.testing.assert_array_equal(pa.copy_to_host(), pd.copy_to_host())
