"""Modules: layers with a forward and a backward, parameters and their gradients in dicts.

A Module owns `params` and `grads` (name -> array, same shapes), `buffers` (state that is saved but
not trained, such as batch norm's running statistics) and ordered `children`. Full names join the
path with dots exactly as PyTorch does ("layer1.0.conv1.weight"), so a state dict maps one-to-one
onto the equivalent PyTorch model's.

`forward(x)` caches what `backward` needs; `backward(dy)` returns dx and *adds* into `grads`, so
call `zero_grad()` before each step. Spatial layers describe their window for receptive-field
arithmetic (`window`), and every module can report its output shape and multiply-accumulates for
one example (`out_shape`, `macs`), which `numconv describe` uses.

`to("cuda")` moves every parameter, gradient and buffer to the GPU (numba device arrays; 0-d
counters stay on the host) and the layers then compute there whenever their input is a device
array; `to("cpu")` brings them back. Build the optimiser after moving the model: it holds the
arrays it updates. `state_dict()` always returns host arrays, so checkpoints load on either
device.
"""
from collections import OrderedDict

import numpy as np

from numconv.ops.nn import on_gpu, zero_


class Module:
    def __init__(self):
        self.params = OrderedDict()
        self.grads = OrderedDict()
        self.buffers = OrderedDict()
        self.children = OrderedDict()
        self.training = True
        self.device = "cpu"

    # -------------------------------------------------------------------------------- building
    def add_param(self, name, value):
        value = np.ascontiguousarray(value)
        self.params[name] = value
        self.grads[name] = np.zeros_like(value)
        return value

    def add_buffer(self, name, value):
        value = np.asarray(value)            # (np.ascontiguousarray would make a 0-d counter 1-d)
        self.buffers[name] = value if value.flags.c_contiguous else np.ascontiguousarray(value)
        return self.buffers[name]

    def add(self, name, module):
        self.children[str(name)] = module
        return module

    def __getattr__(self, name):
        # Children are reachable as attributes (model.layer1), as in PyTorch.
        children = self.__dict__.get("children")
        if children is not None and name in children:
            return children[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    # ------------------------------------------------------------------------------ computation
    def forward(self, x):
        raise NotImplementedError

    def backward(self, dy):
        raise NotImplementedError

    def __call__(self, x):
        return self.forward(x)

    # ---------------------------------------------------------------------------------- walking
    def modules(self, prefix=""):
        """(full name, module) for this module and every descendant, depth first."""
        yield prefix, self
        for name, child in self.children.items():
            yield from child.modules(f"{prefix}.{name}" if prefix else name)

    def named_parameters(self):
        """(full name, parameter, gradient) for every trainable array."""
        for mod_name, mod in self.modules():
            for name, p in mod.params.items():
                full = f"{mod_name}.{name}" if mod_name else name
                yield full, p, mod.grads[name]

    def named_buffers(self):
        for mod_name, mod in self.modules():
            for name, b in mod.buffers.items():
                yield (f"{mod_name}.{name}" if mod_name else name), b

    def num_parameters(self):
        return sum(p.size for _, p, _ in self.named_parameters())

    def zero_grad(self):
        for _, _, g in self.named_parameters():
            zero_(g)

    supports_cuda = True   # a layer without a GPU path sets False, and .to("cuda") refuses

    def to(self, device):
        """Move parameters, gradients and buffers to `device` ('cpu' or 'cuda'), in place; returns
        self. Build (or rebuild) the optimiser afterwards: it updates the arrays it was given."""
        from numconv.nn import device as dev
        dev.check_device(device)
        if device == "cuda":
            slow = sorted({type(m).__name__ for _, m in self.modules() if not m.supports_cuda})
            if slow:
                raise ValueError(f"{', '.join(slow)} has no CUDA path yet, so this model cannot "
                                 f"move to the GPU; train it with device='cpu'")
        move = dev.to_device if device == "cuda" else dev.to_host
        for _, m in self.modules():
            for store in (m.params, m.grads):
                for k, a in store.items():
                    store[k] = move(a)
            for k, b in m.buffers.items():
                if b.ndim:                       # 0-d counters stay on the host
                    m.buffers[k] = move(b)
            m.device = device
        return self

    def train(self, mode=True):
        for _, m in self.modules():
            m.training = mode
        return self

    def eval(self):
        return self.train(False)

    # ------------------------------------------------------------------------------ state dicts
    def state_dict(self):
        """name -> array for every parameter and buffer, in definition order (PyTorch's names)."""
        state = OrderedDict((n, p) for n, p, _ in self.named_parameters())
        state.update(self.named_buffers())
        for k, a in state.items():
            if on_gpu(a):
                state[k] = a.copy_to_host()
        return state

    def load_state_dict(self, state):
        """Copy arrays in by name; every name must be present with the same shape."""
        own = OrderedDict((n, p) for n, p, _ in self.named_parameters())
        own.update(self.named_buffers())
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        if missing or unexpected:
            raise ValueError(f"state does not match the model: missing {missing[:5]}"
                             f"{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
                             f"{'...' if len(unexpected) > 5 else ''}")
        for k, dst in own.items():
            src = np.asarray(state[k])
            if src.shape == (1,) and dst.shape == ():
                src = src.reshape(())            # a counter saved 1-d by earlier versions
            if src.shape != dst.shape:
                raise ValueError(f"state entry {k!r} has shape {src.shape}, the model expects "
                                 f"{dst.shape}")
            if on_gpu(dst):
                dst.copy_to_device(np.ascontiguousarray(src, dtype=dst.dtype))
            else:
                dst[...] = src

    # ------------------------------------------------------------------------------ description
    window = None   # spatial layers: tuple of (extent, stride, pad_before) per spatial dimension

    def out_shape(self, in_shape):
        """Output shape for one example (no batch axis) given the input's."""
        return tuple(in_shape)

    def macs(self, in_shape):
        """Multiply-accumulates of one forward pass for one example."""
        return 0


class Sequential(Module):
    """Children applied in order; named "0", "1", ... unless given names."""

    def __init__(self, *layers, names=None):
        super().__init__()
        for i, layer in enumerate(layers):
            self.add(names[i] if names else str(i), layer)

    def forward(self, x):
        for layer in self.children.values():
            x = layer.forward(x)
        return x

    def backward(self, dy):
        for layer in reversed(self.children.values()):
            dy = layer.backward(dy)
        return dy

    def out_shape(self, in_shape):
        for layer in self.children.values():
            in_shape = layer.out_shape(in_shape)
        return in_shape

    def __len__(self):
        return len(self.children)

    def __getitem__(self, i):
        return list(self.children.values())[i]
