"""Weight initialisers, chosen per layer as the papers do.

- 'kaiming': He et al. 2015, normal with std sqrt(2 / fan_in), for ReLU networks (VGG, ResNet's
  CIFAR nets); 'kaiming_out' uses fan_out, as ResNet's ImageNet code does.
- 'glorot': Glorot & Bengio 2010, uniform in +-sqrt(6 / (fan_in + fan_out)), for tanh/sigmoid.
- 'lecun': LeCun et al. 1998, uniform in +-2.4 / fan_in (weights and biases).
- 'normal0.01': AlexNet's N(0, 0.01^2); 'xavier_uniform' is an alias of 'glorot'.
Biases start at zero except under 'lecun'.
"""
import numpy as np

INITS = ("kaiming", "kaiming_out", "glorot", "xavier_uniform", "lecun", "normal0.01")


def fans(shape):
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def make(init, shape, rng, dtype=np.float32):
    fan_in, fan_out = fans(shape)
    if init == "kaiming":
        w = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
    elif init == "kaiming_out":
        w = rng.normal(0.0, np.sqrt(2.0 / fan_out), shape)
    elif init in ("glorot", "xavier_uniform"):
        a = np.sqrt(6.0 / (fan_in + fan_out))
        w = rng.uniform(-a, a, shape)
    elif init == "lecun":
        a = 2.4 / fan_in
        w = rng.uniform(-a, a, shape)
    elif init == "normal0.01":
        w = rng.normal(0.0, 0.01, shape)
    else:
        raise ValueError(f"initialiser {init!r} is unknown; use one of {', '.join(INITS)}")
    return w.astype(dtype)


def bias(init, n, fan_in, rng, dtype=np.float32):
    if init == "lecun":
        a = 2.4 / fan_in
        return rng.uniform(-a, a, n).astype(dtype)
    return np.zeros(n, dtype)
