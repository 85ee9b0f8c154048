"""Layers with state or cross-channel terms against torch.nn (skipped without torch): BatchNorm2d
in training (batch statistics, running averages, gradients) and eval, and AlexNet's LRN with
PyTorch's alpha convention (alpha * n there)."""
import numpy as np
import pytest

from numconv.nn.layers import BatchNorm2d, LocalResponseNorm

torch = pytest.importorskip("torch")


def test_batchnorm2d_matches_torch_in_training_and_eval():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((6, 4, 5, 7)) * 3 + 1.5).astype(np.float64)
    dy = rng.standard_normal(x.shape)
    ours = BatchNorm2d(4, momentum=0.1, dtype=np.float64)
    ours.params["weight"][...] = rng.uniform(0.5, 2, 4)
    ours.params["bias"][...] = rng.standard_normal(4)
    ref = torch.nn.BatchNorm2d(4, momentum=0.1).double()
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(ours.params["weight"]))
        ref.bias.copy_(torch.from_numpy(ours.params["bias"]))
    for _ in range(3):                                        # running averages over 3 batches
        ours.train()
        ref.train()
        tx = torch.from_numpy(x).requires_grad_(True)
        ty = ref(tx)
        y = ours.forward(x)
        np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-10, atol=1e-10)
        ty.backward(torch.from_numpy(dy))
        ours.zero_grad()
        dx = ours.backward(dy)
        np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(ours.grads["weight"], ref.weight.grad.numpy(), rtol=1e-9)
        np.testing.assert_allclose(ours.grads["bias"], ref.bias.grad.numpy(), rtol=1e-9)
        ref.weight.grad = ref.bias.grad = None
        x = x * 0.9 + 0.3
    np.testing.assert_allclose(ours.buffers["running_mean"], ref.running_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(ours.buffers["running_var"], ref.running_var.numpy(), rtol=1e-12)
    assert int(np.asarray(ours.buffers["num_batches_tracked"]).ravel()[0]) == 3
    ours.eval()
    ref.eval()
    with torch.no_grad():
        want = ref(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours.forward(x), want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("size", [3, 5])
def test_local_response_norm_matches_torch(size):
    rng = np.random.default_rng(size)
    x = rng.standard_normal((2, 7, 4, 3)) * 4
    dy = rng.standard_normal(x.shape)
    ours = LocalResponseNorm(size=size, alpha=1e-2, beta=0.75, k=2.0)
    ref = torch.nn.LocalResponseNorm(size, alpha=1e-2 * size, beta=0.75, k=2.0)
    tx = torch.from_numpy(x).requires_grad_(True)
    ty = ref(tx)
    np.testing.assert_allclose(ours.forward(x), ty.detach().numpy(), rtol=1e-10, atol=1e-12)
    ty.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(ours.backward(dy), tx.grad.numpy(), rtol=1e-9, atol=1e-12)
