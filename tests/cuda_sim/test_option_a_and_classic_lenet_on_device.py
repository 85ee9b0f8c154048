"""The layers that had no GPU path — ResNet's option-A shortcut (CIFAR ResNets) and classic
LeNet-5's masked C3 convolution and trainable subsampling — forward and backward on the GPU against
the same layers on the CPU, under the simulator. Tiny shapes: each layer's device branch is the
point; the kernels it calls are checked in test_kernels.py and test_nn_kernels.py."""
import numpy as np

from numconv import models
from numconv.models.lenet import MaskedConv2d, Subsampling
from numconv.nn import BasicBlock, Sequential, Tanh
from kernel_helpers import assert_layers_match_across_devices


def _net():
    rng = np.random.default_rng(0)
    mask = rng.random((4, 2, 3, 3)) < 0.6
    return Sequential(MaskedConv2d(2, 4, 3, mask, padding=1, rng=rng), Tanh(lecun=True),
                      Subsampling(4, 2, rng=rng),
                      BasicBlock(4, 6, stride=2, shortcut="A", rng=rng))


def test_option_a_shortcut_and_classic_lenet_layers_on_the_gpu():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 2, 6, 6)).astype(np.float32)
    cpu, gpu = assert_layers_match_across_devices(_net, x, rng)
    grads = {n: g for n, _, g in gpu.named_parameters()}
    masked = grads["0.weight"].copy_to_host()
    assert not masked[~cpu.children["0"].mask].any()    # masked-out weights learn nothing


def test_classic_lenet5_and_cifar_resnets_move_to_the_gpu():
    for net in (models.build_model("lenet5", classic=True),
                models.build_model("resnet20", width=0.25, initialize=False)):
        net.to("cuda")
        assert net.to("cpu") is net
