"""Whole training steps with the model on the GPU (model.to("cuda")), under the CUDA simulator:
LeNet-5 (modern, narrowed) and the Kim CNN take the same steps as on the CPU, with losses equal to
float32 tolerance; checkpoints move between the devices; a host batch given to a device model is a
clear error.

Only the batch goes in and the loss (and the count of correct answers) comes out of each step; the
tests check that the parameters, gradients and optimiser state stay device arrays throughout."""
import numpy as np
import pytest

from numconv import config, models
from numconv.nn import SoftmaxCrossEntropy
from numconv.nn.device import to_device
from numconv.ops import nn as F
from numconv.optim import make_optimizer
from numconv.text.models import KimCNN
from numconv.train.loop import set_dropout_step
from kernel_helpers import assert_close


def _lenet(seed=3):
    # 32x32 inputs as in the paper; width 0.2 (1, 3, 24 and 17 maps) because the simulator runs
    # each CUDA thread as Python, about a millisecond each: a step is still ~10^4 threads
    return models.build_model("lenet5", num_classes=10, in_channels=1, input_size=32, width=0.2,
                              seed=seed)


def _kim(variant):
    table = np.random.default_rng(5).standard_normal((30, 6)).astype(np.float32)
    return KimCNN(30, 3, embed_dim=6, widths=(2, 3), maps=4, variant=variant,
                  pretrained=None if variant == "rand" else table, seed=2)


class _CopiesToHost:
    """Counts device-to-host copies (the simulator's device arrays stand in for the GPU's)."""

    def __init__(self, monkeypatch):
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray
        self.count = 0
        real = FakeCUDAArray.copy_to_host

        def counted(array, *args, **kwargs):
            self.count += 1
            return real(array, *args, **kwargs)

        monkeypatch.setattr(FakeCUDAArray, "copy_to_host", counted)


def _train(model, optimizer, batches, on_gpu, copies=None):
    """(loss, correct) of each step: forward, loss, backward, update, as numconv.train.loop does.
    On the GPU, checks that a step copies exactly two values to the host: loss and count."""
    loss_fn = SoftmaxCrossEntropy(label_smoothing=0.1)
    out = []
    for step, (x, y) in enumerate(batches):
        before = copies.count if copies else 0
        model.train()
        model.zero_grad()
        set_dropout_step(model, step)
        if on_gpu and isinstance(x, np.ndarray):
            x = to_device(x)                # the batch is the one thing that goes in
        logits = model.forward(x)
        loss, dlogits = loss_fn(logits, y)
        model.backward(dlogits)
        optimizer.step()
        out.append((loss, F.count_correct(logits, y)))
        if copies:
            assert copies.count - before == 2, "a step copied more than loss and count to the host"
    return out


def _assert_on_gpu(model, optimizer):
    for name, p, g in model.named_parameters():
        assert F.on_gpu(p) and F.on_gpu(g), name
    for name, b in model.named_buffers():
        assert F.on_gpu(b) or np.ndim(b) == 0, name
    for name, bufs in optimizer.state.items():
        assert all(F.on_gpu(b) for b in bufs.values()), name


def _compare(cpu_model, gpu_model, batches, optimizer, monkeypatch, **options):
    opt_cpu = make_optimizer(optimizer, cpu_model.named_parameters(), 0.05, **options)
    gpu_model.to("cuda")
    opt_gpu = make_optimizer(optimizer, gpu_model.named_parameters(), 0.05, **options)
    want = _train(cpu_model, opt_cpu, batches, on_gpu=False)
    got = _train(gpu_model, opt_gpu, batches, on_gpu=True, copies=_CopiesToHost(monkeypatch))
    _assert_on_gpu(gpu_model, opt_gpu)
    for step, ((gl, gc), (wl, wc)) in enumerate(zip(got, want)):
        np.testing.assert_allclose(gl, wl, rtol=1e-4, err_msg=f"loss at step {step}")
        assert gc == wc, f"correct answers at step {step}"
    cpu_state, gpu_state = cpu_model.state_dict(), gpu_model.state_dict()
    for k in cpu_state:
        assert isinstance(gpu_state[k], np.ndarray), k
        assert_close(gpu_state[k], cpu_state[k], np.float32, factor=10, err_msg=k)


def test_lenet5_trains_the_same_on_the_gpu(monkeypatch):
    # The direct convolution forward (the tiled one costs several times more simulated threads
    # and syncs; tests/cuda_sim/test_kernels.py checks it against the reference). Segments of 256
    # positions still split C1's weight gradient into 7.
    monkeypatch.setattr(config, "CUDA_CONV_FORWARD", "direct")
    monkeypatch.setattr(config, "CUDA_THREADS_PER_BLOCK", 8)
    monkeypatch.setattr(config, "CUDA_WGRAD_SEGMENT", 256)
    rng = np.random.default_rng(0)
    batches = [(rng.standard_normal((2, 1, 32, 32)).astype(np.float32), rng.integers(0, 10, 2))
               for _ in range(2)]
    _compare(_lenet(), _lenet(), batches, "sgd", monkeypatch, momentum=0.9, nesterov=True,
             weight_decay=1e-3)


@pytest.mark.parametrize("variant, optimizer", [("rand", "adadelta"), ("multichannel", "adam")])
def test_kim_cnn_trains_the_same_on_the_gpu(variant, optimizer, monkeypatch):
    rng = np.random.default_rng(1)
    lengths = np.array([3, 5, 1])
    pad = 2
    batches = []
    for _ in range(2):
        ids = np.zeros((3, 5 + 2 * pad), np.int64)
        for i, n in enumerate(lengths):
            ids[i, pad:pad + n] = rng.integers(1, 30, n)
        ids[0, pad:pad + 2] = 7                       # a repeated word: one embedding segment
        batches.append(((ids, lengths), rng.integers(0, 3, 3)))
    _compare(_kim(variant), _kim(variant), batches, optimizer, monkeypatch)


def test_checkpoints_move_between_devices():
    table = np.random.default_rng(5).standard_normal((30, 6)).astype(np.float32)

    def kim(seed):
        return KimCNN(30, 3, embed_dim=6, widths=(2, 3), maps=4, variant="multichannel",
                      pretrained=table, seed=seed).eval()

    batch = (np.array([[0, 0, 4, 9, 4, 0, 0], [0, 0, 7, 0, 0, 0, 0]]), np.array([3, 1]))
    cpu, gpu = kim(1), kim(2).to("cuda")
    gpu.load_state_dict(cpu.state_dict())                 # a CPU checkpoint onto the GPU
    want = cpu.forward(batch)
    assert_close(gpu.forward(batch).copy_to_host(), want, np.float32)
    back = kim(3)
    back.load_state_dict(gpu.state_dict())                # and a GPU one onto the CPU
    assert_close(back.forward(batch), want, np.float32)
    gpu.to("cpu")                                         # the model itself comes back too
    assert all(isinstance(p, np.ndarray) for _, p, _ in gpu.named_parameters())
    assert_close(gpu.forward(batch), want, np.float32)


def test_host_batch_on_a_gpu_model_is_a_clear_error(monkeypatch):
    from numconv.models.lenet import MaskedConv2d, Subsampling
    model = _lenet().to("cuda")
    with pytest.raises(ValueError, match=r"on the host.*to_device"):
        model.forward(np.zeros((1, 1, 32, 32), np.float32))
    for layer in (MaskedConv2d, Subsampling):   # every layer has a GPU path now: pretend not
        monkeypatch.setattr(layer, "supports_cuda", False)
    with pytest.raises(ValueError, match="MaskedConv2d, Subsampling has no CUDA path"):
        models.build_model("lenet5", classic=True).to("cuda")
    with pytest.raises(ValueError, match="device 'gpu' is unknown"):
        _lenet().to("gpu")
