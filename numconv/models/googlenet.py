"""GoogLeNet (Szegedy et al. 2014, "Going deeper with convolutions"), Table 1 exactly: a 7x7/2
convolution with 64 maps, 3x3/2 max-pool, LRN, 1x1 convolution with 64 maps, 3x3 convolution with
192, LRN, 3x3/2 max-pool, inception 3a, 3b, max-pool, 4a-4e, max-pool, 5a, 5b, 7x7 average pool,
dropout 0.4 and a linear classifier. Every convolution, those inside the inception modules included,
is followed by a ReLU (section 5); convolutions carry biases and there is no batch norm, as
published.

An inception module (Fig. 2b) concatenates four branches on channels: 1x1; 1x1 reduce -> 3x3;
1x1 reduce -> 5x5; 3x3 stride-1 max-pool -> 1x1 "pool proj", with the widths of Table 1.

Names follow torchvision's GoogLeNet minus its batch norms: conv1.conv, conv2.conv, conv3.conv,
inception3a.branch1.conv, inception3a.branch2.0.conv, ..., inception3a.branch4.1.conv, fc,
aux1.conv.conv, aux1.fc1, aux1.fc2.

Auxiliary classifiers (aux=True; section 5): on the outputs of 4a and 4d, a 5x5/3 average pool
(4x4 maps at 224x224), a 1x1 convolution with 128 maps and ReLU, FC 1024 with ReLU, dropout 0.7 and
a linear classifier; their losses are added to the total with weight 0.3 during training and they
are dropped at inference. In training mode `forward` returns the main logits only and leaves the
auxiliary logits in `model.aux_outputs` (aux1 first); pass their loss gradients to
`model.backward(dlogits, aux_grads=[d1, d2])` (`aux_loss` computes both). Without aux_grads the
auxiliary classifiers get no gradient. In eval mode they do not run.

Other input sizes: the final 7x7 average pool becomes global average pooling when the last map is
not 7x7, and the auxiliary pool's window is clipped to the map when the map is smaller than 5x5 (the
classifier after it takes 128 x h x w inputs).

The paper gives no initialisation or LRN constants; they follow the BVLC reproduction
(models/bvlc_googlenet in Caffe): Xavier weights, biases 0.2 (0 in the classifiers), LRN over 5
maps with alpha = 1e-4 / 5 (Caffe divides by the size), beta = 0.75, k = 1.
"""
from numconv.describe import trace
from numconv.nn import AvgPool2d, Concat, Dropout, Flatten, GlobalPool, Linear, \
    LocalResponseNorm, MaxPool2d, ReLU, Sequential

from numconv.models._common import ConvReLU, Network, check_input, dropout_seed, scaled
from numconv.ops import nn as F

# Table 1: #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj.
INCEPTION = {
    "inception3a": (64, 96, 128, 16, 32, 32),
    "inception3b": (128, 128, 192, 32, 96, 64),
    "inception4a": (192, 96, 208, 16, 48, 64),
    "inception4b": (160, 112, 224, 24, 64, 64),
    "inception4c": (128, 128, 256, 24, 64, 64),
    "inception4d": (112, 144, 288, 32, 64, 64),
    "inception4e": (256, 160, 320, 32, 128, 128),
    "inception5a": (256, 160, 320, 32, 128, 128),
    "inception5b": (384, 192, 384, 48, 128, 128),
}

# Table 1's "params" column (K), for comparison; see tests/test_models.py for how far it is from
# the counts its own filter columns give.
TABLE1_PARAMS_K = {"inception3a": 159, "inception3b": 380, "inception4a": 364, "inception4b": 437,
                   "inception4c": 463, "inception4d": 580, "inception4e": 840, "inception5a": 1072,
                   "inception5b": 1388}

BIAS = 0.2


class Inception(Concat):
    """Four branches concatenated on channels: branch1 1x1; branch2 1x1 -> 3x3; branch3 1x1 -> 5x5;
    branch4 3x3/1 max-pool -> 1x1."""

    def __init__(self, in_ch, c1, r3, c3, r5, c5, proj, rng=None):
        def cr(i, o, k, p=0):
            return ConvReLU(i, o, k, padding=p, init="glorot", rng=rng, bias_value=BIAS)

        super().__init__(
            branch1=cr(in_ch, c1, 1),
            branch2=Sequential(cr(in_ch, r3, 1), cr(r3, c3, 3, 1)),
            branch3=Sequential(cr(in_ch, r5, 1), cr(r5, c5, 5, 2)),
            branch4=Sequential(MaxPool2d(3, 1, 1), cr(in_ch, proj, 1)))
        self.out_channels = c1 + c3 + c5 + proj


class GoogLeNet(Network):
    taps = {"inception4a": ("aux1",), "inception4d": ("aux2",)}   # side outputs (numconv.describe)
    aux_weight = 0.3                                               # section 5

    def _main(self):
        sides = {s for group in self.taps.values() for s in group}
        return [(n, m) for n, m in self.children.items() if n not in sides]

    def _sides(self, name):
        return [s for s in self.taps.get(name, ()) if s in self.children]

    def forward(self, x):
        self.aux_outputs = []
        for name, m in self._main():
            x = m.forward(x)
            if self.training:
                self.aux_outputs += [self.children[s].forward(x) for s in self._sides(name)]
        return x

    def backward(self, dy, aux_grads=None):
        """dy: gradient of the main logits; aux_grads: one gradient per entry of `aux_outputs`
        (aux1 first), or None to give the auxiliary classifiers no gradient."""
        pending = {}
        if aux_grads is not None:
            names = [s for n, _ in self._main() for s in self._sides(n)]
            if len(aux_grads) != len(self.aux_outputs) or len(aux_grads) != len(names):
                raise ValueError(f"aux_grads has {len(aux_grads)} entries; the last forward pass "
                                 f"produced {len(self.aux_outputs)} auxiliary outputs")
            pending = dict(zip(names, aux_grads))
        for name, m in reversed(self._main()):
            for s in self._sides(name):
                if s in pending:
                    dy = F.add(dy, self.children[s].backward(pending[s]))
            dy = m.backward(dy)
        return dy

    def out_shape(self, in_shape):
        for _, m in self._main():
            in_shape = m.out_shape(in_shape)
        return in_shape


def aux_loss(model, loss_fn, labels):
    """The auxiliary classifiers' share of the training loss after a training forward pass:
    (aux_weight * sum of loss_fn(aux logits, labels), [gradient per aux output]) — pass the list to
    `model.backward(dlogits, aux_grads=...)`. (0.0, None) when the model has no aux outputs."""
    if not getattr(model, "aux_outputs", None):
        return 0.0, None
    total, grads = 0.0, []
    for logits in model.aux_outputs:
        loss, d = loss_fn(logits, labels)
        total += model.aux_weight * loss
        grads.append(F.scale(d, model.aux_weight))
    return total, grads


def _aux(in_shape, num_classes, width, rng):
    C, H, W = in_shape
    pool = AvgPool2d((min(5, H), min(5, W)), 3)
    conv = ConvReLU(C, scaled(128, width), 1, init="glorot", rng=rng, bias_value=BIAS)
    c, h, w = conv.out_shape(pool.out_shape(in_shape))
    hidden = scaled(1024, width)
    fc1 = Linear(c * h * w, hidden, init="glorot", rng=rng)
    fc1.params["bias"][...] = BIAS
    return Sequential(pool, conv, Flatten(), fc1, ReLU(), Dropout(0.7, dropout_seed(rng)),
                      Linear(hidden, num_classes, init="glorot", rng=rng),
                      names=["pool", "conv", "flatten", "fc1", "relu", "dropout", "fc2"])


def googlenet(num_classes, in_channels, input_size, width, rng, aux=False):
    input_shape = (in_channels,) + tuple(input_size)
    s = lambda c: scaled(c, width)   # noqa: E731

    def lrn():
        return LocalResponseNorm(5, 1e-4 / 5, 0.75, 1.0)

    body = [("conv1", ConvReLU(in_channels, s(64), 7, 2, 3, rng=rng, bias_value=BIAS)),
            ("maxpool1", MaxPool2d(3, 2, ceil_mode=True)), ("lrn1", lrn()),
            ("conv2", ConvReLU(s(64), s(64), 1, rng=rng, bias_value=BIAS)),
            ("conv3", ConvReLU(s(64), s(192), 3, padding=1, rng=rng, bias_value=BIAS)),
            ("lrn2", lrn()), ("maxpool2", MaxPool2d(3, 2, ceil_mode=True))]
    c = s(192)
    for name, widths in INCEPTION.items():
        block = Inception(c, *(s(v) for v in widths), rng=rng)
        body.append((name, block))
        c = block.out_channels
        if name in ("inception3b", "inception4e"):
            body.append((f"maxpool{3 if name == 'inception3b' else 4}",
                         MaxPool2d(3, 2, ceil_mode=True)))
    C, H, W = check_input("googlenet", body, input_shape)
    children = list(body)
    if aux:
        names = [n for n, _ in body]
        for side, source in (("aux1", "inception4a"), ("aux2", "inception4d")):
            at = trace(body[:names.index(source) + 1], input_shape)
            children.append((side, _aux(at, num_classes, width, rng)))
    avgpool = AvgPool2d(7, 1) if (H, W) == (7, 7) else GlobalPool("avg")
    children += [("avgpool", avgpool), ("flatten", Flatten()),
                 ("dropout", Dropout(0.4, dropout_seed(rng))),
                 ("fc", Linear(C, num_classes, init="glorot", rng=rng))]
    return GoogLeNet("googlenet", input_shape, num_classes, {"aux": aux}, children)
