"""Training throughput on the GPU: numconv (model.to("cuda")) beside PyTorch with cuDNN, same nets.

    python benchmarks/bench_gpu_train.py [--steps N] [--warmup N] [--nets lenet5,resnet18,kim]
                                         [--tf32] [--json PATH]
    NUMBA_ENABLE_CUDASIM=1 python benchmarks/bench_gpu_train.py --simulate    # smoke test only

Needs an NVIDIA GPU, numba-cuda and a CUDA build of PyTorch (one line says which is missing).
For each network and batch size, both libraries run full training steps (forward, softmax
cross-entropy, backward, optimiser update) with the model and optimiser state resident on the GPU;
each step uploads its batch and reads back the loss, as `numconv train-image --device cuda` does.
Reported: images (or sentences) per second over --steps timed steps after --warmup untimed ones
(the first compiles numconv's kernels), each timed block bracketed by device synchronisation.

- LeNet-5 (modern: ReLU, max-pooling) on 1x32x32, SGD with momentum, batch 64 and 256;
- ResNet-18 scaled to width 0.5 on 3x64x64 with 200 classes (a Tiny-ImageNet-sized net), batch
  norm in training mode, SGD with momentum and weight decay, batch 64 and 128;
- the Kim CNN (widths 3, 4, 5 x 100 maps, dropout 0.5, 18,000 words, sentences of ~21 words),
  Adadelta, 50-d and 300-d embeddings, batch 50 and 256.

Issue 5's target: ahead of PyTorch (ratio > 1) on LeNet-5 and Kim-CNN training throughput.
--simulate runs every net once at toy sizes under NUMBA_ENABLE_CUDASIM=1 with PyTorch on the CPU, to
show that the script works where no GPU is; its timings mean nothing and are labelled so.
"""
import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled
sys.path.insert(0, str(Path(__file__).resolve().parent))       # the other benchmarks' helpers

import numpy as np  # noqa: E402
from bench_gpu import require_gpu  # noqa: E402
from bench_text import _torch_kim  # noqa: E402

NETS = ("lenet5", "resnet18", "kim")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=30, help="timed steps per measurement")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (>= 1: compiles)")
    p.add_argument("--nets", default=",".join(NETS), help=f"comma-separated: {', '.join(NETS)}")
    p.add_argument("--tf32", action="store_true", help="let cuDNN use TF32 (off: both float32)")
    p.add_argument("--simulate", action="store_true",
                   help="toy sizes under the CUDA simulator, PyTorch on the CPU (a smoke test)")
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = p.parse_args(argv)
    args.nets = [n.strip() for n in args.nets.split(",") if n.strip()]
    unknown = [n for n in args.nets if n not in NETS]
    if unknown or not args.nets:
        p.error(f"unknown net(s) {', '.join(unknown) or repr(args.nets)}; choose from "
                f"{', '.join(NETS)}")
    if args.steps < 1 or args.warmup < 1:
        p.error(f"--steps and --warmup must be >= 1, got {args.steps} and {args.warmup}")
    if args.simulate:
        args.steps, args.warmup = 1, 1
    return args


# ------------------------------------------------------------------------------ the PyTorch twins

def torch_resnet18(torch, width, num_classes, in_channels=3):
    """torchvision's ResNet-18 layout with numconv's width rounding (numconv.models._common)."""
    from numconv.models._common import scaled
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.downsample = None
            if stride != 1 or cin != cout:
                self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                                nn.BatchNorm2d(cout))

        def forward(self, x):
            y = torch.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            return torch.relu(y + (x if self.downsample is None else self.downsample(x)))

    stem = scaled(64, width)
    layers = [nn.Conv2d(in_channels, stem, 7, 2, 3, bias=False), nn.BatchNorm2d(stem),
              nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
    c = stem
    for i in range(4):
        planes = scaled(64 * 2 ** i, width)
        for j in range(2):
            layers.append(Block(c, planes, 2 if i > 0 and j == 0 else 1))
            c = planes
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes)]
    return nn.Sequential(*layers)


# -------------------------------------------------------------------------------------- the cases

def image_case(torch, net, batch, dev, simulate):
    """(numconv step, torch step, batches, items per step) for an image net."""
    from numconv import models
    from numconv.nn import SoftmaxCrossEntropy
    from numconv.nn import device as nd
    from numconv.ops.nn import count_correct
    from numconv.optim import SGD
    rng = np.random.default_rng(0)
    if net == "lenet5":
        shape, classes = (1, 32, 32), 10
        model = models.build_model("lenet5", width=0.1 if simulate else 1.0, seed=0)
        tmodel = torch_lenet(torch, model)
        wd = 0.0
    else:
        size, classes, width = (32, 2, 1 / 64) if simulate else (64, 200, 0.5)
        shape = (3, size, size)
        model = models.build_model("resnet18", num_classes=classes, input_size=size, width=width,
                                   seed=0)
        tmodel = torch_resnet18(torch, width, classes)
        wd = 5e-4
    model.to("cuda")
    opt = SGD(model.named_parameters(), 0.01, 0.9, weight_decay=wd)
    loss_fn = SoftmaxCrossEntropy()

    def ours(x, y):
        model.zero_grad()
        logits = model.forward(nd.to_device(x))
        loss, d = loss_fn(logits, y)
        model.backward(d)
        opt.step()
        count_correct(logits, y)
        return float(loss)

    tmodel = tmodel.to(dev)
    topt = torch.optim.SGD(tmodel.parameters(), lr=0.01, momentum=0.9, weight_decay=wd)
    tloss = torch.nn.CrossEntropyLoss()

    def theirs(x, y):
        topt.zero_grad()
        logits = tmodel(torch.from_numpy(x).to(dev))
        yy = torch.from_numpy(y).to(dev)
        loss = tloss(logits, yy)
        loss.backward()
        topt.step()
        (logits.argmax(1) == yy).sum()
        return loss.item()

    data = [(rng.standard_normal((batch,) + shape).astype(np.float32),
             rng.integers(0, classes, batch)) for _ in range(8)]
    return ours, theirs, data, batch


def torch_lenet(torch, model):
    """A PyTorch LeNet-5 (modern) with the channel counts of numconv's (narrowed under
    --simulate)."""
    nn = torch.nn
    w = {n: p.shape for n, p in model.state_dict().items()}
    convs = sorted(k for k in w if k.endswith("weight") and len(w[k]) == 4)
    c1, c3, c5 = (w[k][0] for k in convs)
    lin = [k for k in w if k.endswith("weight") and len(w[k]) == 2]
    f6 = w[lin[0]][0]
    return nn.Sequential(nn.Conv2d(1, c1, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(c1, c3, 5),
                         nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(c3, c5, 5), nn.ReLU(),
                         nn.Flatten(), nn.Linear(c5, f6), nn.ReLU(), nn.Linear(f6, 10))


def kim_case(torch, D, batch, dev, simulate):
    from numconv.nn import SoftmaxCrossEntropy
    from numconv.ops.nn import count_correct
    from numconv.optim import Adadelta
    from numconv.text.models import KimCNN, window_mask
    from numconv.text.train import pad_batch
    V, widths, maps, L = (60, (3, 4, 5), 4, 6) if simulate else (18000, (3, 4, 5), 100, 21)
    rng = np.random.default_rng(0)
    model = KimCNN(V, 2, embed_dim=D, widths=widths, maps=maps).to("cuda")
    opt = Adadelta(model.named_parameters())
    loss_fn = SoftmaxCrossEntropy()
    tmodel = _torch_kim(V, D, 2, widths, maps).to(dev)
    topt = torch.optim.Adadelta(tmodel.parameters(), rho=0.95, eps=1e-6)
    data = []
    for _ in range(8):
        sents = [rng.integers(2, V, int(rng.integers(max(1, L - 8), L + 8))) for _ in range(batch)]
        ids, lengths = pad_batch(sents, max(widths) - 1)
        data.append(((ids, lengths), rng.integers(0, 2, batch)))

    def ours(x, y):
        model.zero_grad()
        logits = model.forward(x)
        loss, d = loss_fn(logits, y)
        model.backward(d)
        opt.step()
        count_correct(logits, y)
        return float(loss)

    def theirs(x, y):
        ids, lengths = x
        masks = [torch.from_numpy(window_mask(lengths, max(widths) - 1, k,
                                              ids.shape[1] - k + 1))[:, None, :].to(dev)
                 for k in widths]
        yy = torch.from_numpy(y).to(dev)
        topt.zero_grad()
        logits = tmodel(torch.from_numpy(ids).to(dev), masks)
        loss = torch.nn.functional.cross_entropy(logits, yy)
        loss.backward()
        topt.step()
        (logits.argmax(1) == yy).sum()
        return loss.item()
    return ours, theirs, data, batch


def rate(step, data, items, warmup, steps, sync):
    for i in range(warmup):
        step(*data[i % len(data)])
    sync()
    t = time.perf_counter()
    for i in range(steps):
        step(*data[i % len(data)])
    sync()
    return items * steps / (time.perf_counter() - t)


def main(argv=None):
    args = parse_args(argv)
    torch = require_gpu(simulate=args.simulate)
    from numba import cuda
    dev = torch.device("cpu" if args.simulate else "cuda")
    if not args.simulate:
        torch.backends.cudnn.allow_tf32 = bool(args.tf32)
        torch.backends.cuda.matmul.allow_tf32 = bool(args.tf32)
        torch.backends.cudnn.benchmark = True

    def sync():
        cuda.synchronize()
        if not args.simulate:
            torch.cuda.synchronize()

    cases = []
    for net in args.nets:
        if net == "kim":
            for D in ((8,) if args.simulate else (50, 300)):
                for B in ((2,) if args.simulate else (50, 256)):
                    cases.append((f"Kim CNN {D}-d", "sentences/s", B,
                                  lambda D=D, B=B: kim_case(torch, D, B, dev, args.simulate)))
        else:
            # simulated: batch 2 for ResNet-18, whose batch norm needs two values per channel
            sim = (1,) if net == "lenet5" else (2,)
            for B in (sim if args.simulate else ((64, 256) if net == "lenet5" else (64, 128))):
                name = "LeNet-5" if net == "lenet5" else "ResNet-18 x0.5, 64x64, 200 classes"
                if args.simulate:
                    name += " (toy size)"
                cases.append((name, "images/s", B,
                              lambda net=net, B=B: image_case(torch, net, B, dev, args.simulate)))
    if args.simulate:
        print("SIMULATED (NUMBA_ENABLE_CUDASIM=1, toy sizes, PyTorch on the CPU): the figures "
              "below only show that the benchmark runs; they measure nothing")
    else:
        print(f"GPU: {torch.cuda.get_device_name()}; PyTorch {torch.__version__}, cuDNN "
              f"{torch.backends.cudnn.version()}, TF32 {'on' if args.tf32 else 'off'}; "
              f"{args.steps} timed steps after {args.warmup}")
    print(f"{'network':38} {'batch':>5} {'numconv':>10} {'PyTorch':>10} {'ratio':>6}  unit")
    results = []
    for name, unit, batch, build in cases:
        ours, theirs, data, items = build()
        r_ours = rate(ours, data, items, args.warmup, args.steps, sync)
        r_theirs = rate(theirs, data, items, args.warmup, args.steps, sync)
        results.append({"network": name, "batch": batch, "unit": unit, "numconv": r_ours,
                        "torch": r_theirs, "ratio": r_ours / r_theirs})
        digits = 2 if args.simulate else 0    # simulated rates are fractions of a step per s
        print(f"{name:38} {batch:>5} {r_ours:>10.{digits}f} {r_theirs:>10.{digits}f} "
              f"{r_ours / r_theirs:>6.2f}  {unit}", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"simulated": args.simulate, "results": results},
                                        indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
