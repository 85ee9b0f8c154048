"""Layers, blocks and losses built on the numconv ops."""
from numconv.nn.blocks import BasicBlock, Bottleneck, Concat, ZeroPadShortcut
from numconv.nn.layers import *  # noqa: F401,F403
from numconv.nn.layers import __all__ as _layers_all
from numconv.nn.module import Module, Sequential

__all__ = list(_layers_all) + ["Module", "Sequential", "BasicBlock", "Bottleneck", "Concat",
                               "ZeroPadShortcut"]
