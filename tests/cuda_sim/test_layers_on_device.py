"""Layers on the GPU that the two training tests do not reach (batch norm, LRN, average and Lp
pooling, a residual block with a projection shortcut, an inception-style concatenation, sigmoid
and tanh), forward and backward against the same layers on the CPU, under the simulator. Tiny
shapes: the point is each layer's device branch, the kernels are checked in test_nn_kernels.py."""
import numpy as np

from numconv.nn import (AvgPool2d, BasicBlock, BatchNorm2d, Concat, Conv2d, LocalResponseNorm,
                        LPPool2d, MaxPool2d, ReLU, Sequential, Sigmoid, Tanh)
from numconv.nn.device import to_device
from kernel_helpers import assert_close, assert_layers_match_across_devices


def _net():
    rng = np.random.default_rng(0)
    return Sequential(
        Conv2d(2, 4, 3, padding=1, rng=rng), BatchNorm2d(4), Tanh(lecun=True),
        LocalResponseNorm(3, alpha=0.1), BasicBlock(4, 6, stride=2, rng=rng),
        Concat(a=AvgPool2d(3, stride=1, padding=1, count_include_pad=False),
               b=LPPool2d(2.0, 3, stride=1, padding=1),
               c=Sequential(MaxPool2d(3, stride=1, padding=1), ReLU())),
        Sigmoid())


def test_layers_forward_and_backward_on_the_gpu():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 2, 5, 4)).astype(np.float32)
    cpu, gpu = assert_layers_match_across_devices(_net, x, rng)
    want, got = cpu.state_dict(), gpu.state_dict()      # running statistics included
    for name in want:
        assert_close(got[name], want[name], np.float32, err_msg=name)
    cpu.eval(), gpu.eval()                               # eval mode: the running statistics
    assert_close(gpu.forward(to_device(x)).copy_to_host(), cpu.forward(x), np.float32, factor=10)
