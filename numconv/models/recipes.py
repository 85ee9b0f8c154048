"""Each paper's training recipe, as the keys `numconv train-image` reads.

Keys: optimizer ('sgd', 'adam', 'adadelta'), lr, momentum, nesterov, weight_decay, batch_size,
epochs, schedule ('step' with step_size and gamma, 'cosine', 'plateau' with factor and patience,
'constant'), warmup_epochs, crop_padding and flip (the augmentation the trainer applies),
label_smoothing; plus `source` (where it comes from) and `note` (what the trainer's keys cannot say:
ImageNet crops and colour augmentation, schedules the trainer lacks). Where a paper's schedule has
piecewise steps, it is given as 'multistep' with `milestones` (epochs at which the rate changes) and
either `gamma` or the explicit `lr_values`.
"""
import copy

_BASE = dict(optimizer="sgd", lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0,
             batch_size=128, epochs=90, schedule="constant", step_size=30, gamma=0.1, factor=0.1,
             patience=5, warmup_epochs=0.0, crop_padding=0, flip=False, label_smoothing=0.0)


def _r(**kw):
    rec = dict(_BASE)
    rec.update(kw)
    return rec


RECIPES = {
    # LeCun et al. 1998, section V.A / appendix C: 20 passes over the training set, one pattern per
    # update, stochastic diagonal Levenberg-Marquardt with a global rate of 0.0005 (2 passes),
    # 0.0002 (3), 0.0001 (3), 0.00005 (4), 0.00001 (the rest); no distortions for the baseline.
    # The rates are SDLM's global eta, which each parameter divides by (mu + its Hessian
    # estimate); plain SGD with them is slower than the paper's optimiser.
    "lenet5-classic": _r(optimizer="sgd", lr=5e-4, momentum=0.0, batch_size=1, epochs=20,
                         schedule="multistep", milestones=[2, 5, 8, 12],
                         lr_values=[5e-4, 2e-4, 1e-4, 5e-5, 1e-5],
                         source="LeCun et al. 1998, section V.A and appendix C",
                         note="the paper's optimiser is stochastic diagonal Levenberg-Marquardt "
                              "(mu = 0.02), which divides each rate by a Hessian estimate; plain "
                              "SGD with the same rates learns more slowly"),
    # The modern LeNet-5 (ReLU, max-pooling) is not the paper's network, so it takes a modern
    # recipe rather than one-pattern-per-update SGD: mini-batches of 64, momentum 0.9, a cosine
    # schedule over 15 epochs; no augmentation (the paper's 0.95% is without distortions).
    "lenet5": _r(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4, batch_size=64,
                 epochs=15, schedule="cosine",
                 source="numconv's recipe for the modern variant (mini-batch SGD with momentum)",
                 note="the 1998 network and recipe are --classic"),
    # Krizhevsky et al. 2012, section 5: batch 128, momentum 0.9, weight decay 0.0005, lr 0.01
    # divided by 10 when the validation error stopped improving (three times), about 90 epochs.
    # Section 4.1: random 224x224 crops of 256x256 images and their mirror images, PCA colour noise.
    "alexnet": _r(optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=5e-4, batch_size=128,
                  epochs=90, schedule="plateau", factor=0.1, patience=5, flip=True,
                  source="Krizhevsky et al. 2012, sections 4.1 and 5",
                  note="plateau patience is not in the paper; ImageNet augmentation: random "
                       "227x227 (paper: 224) crops of 256x256 images, flips, PCA colour noise"),
}

# Simonyan & Zisserman 2015, section 3.1: batch 256, momentum 0.9, weight decay 5e-4, dropout 0.5,
# lr 0.01 divided by 10 when validation accuracy stopped improving (three times), 370K iterations
# (74 epochs); 224x224 crops of images rescaled to S = 256 or 384 or S in [256, 512], flips, RGB
# colour shift.
for _name in ("vgg11", "vgg13", "vgg16", "vgg19"):
    RECIPES[_name] = _r(optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=5e-4, batch_size=256,
                        epochs=74, schedule="plateau", factor=0.1, patience=5, flip=True,
                        source="Simonyan & Zisserman 2015, section 3.1",
                        note="plateau patience is not in the paper; ImageNet augmentation: random "
                             "224x224 crops of rescaled images (scale jittering S in [256, 512]), "
                             "flips, RGB colour shift")

# Szegedy et al. 2014, section 6: asynchronous SGD, momentum 0.9, the learning rate cut by 4% every
# 8 epochs, Polyak averaging at inference; patches of 8%-100% of the image with aspect ratio in
# [3/4, 4/3], photometric distortions. The paper gives no base rate, batch size, weight decay or
# length: those are the BVLC reproduction's (Caffe models/bvlc_googlenet: base_lr 0.01, batch 32,
# weight_decay 0.0002, step 0.96 every 320K iterations = 8 epochs, mirror).
RECIPES["googlenet"] = _r(optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=2e-4, batch_size=32,
                          epochs=250, schedule="step", step_size=8, gamma=0.96, flip=True,
                          aux_weight=0.3,
                          source="Szegedy et al. 2014, section 6; BVLC GoogLeNet solver",
                          note="base lr, batch, weight decay and length from the BVLC reproduction "
                               "(max_iter 10M at batch 32 is 250 epochs); ImageNet augmentation: "
                               "crops of 8%-100% of the area, aspect 3/4-4/3, photometric "
                               "distortions; auxiliary losses weighted 0.3")

# He et al. 2015, section 3.4: batch 256, lr 0.1 divided by 10 when the error plateaus, 60e4
# iterations (~120 epochs), weight decay 1e-4, momentum 0.9, no dropout; 224x224 crops of images
# with the shorter side in [256, 480], flips, per-pixel mean subtracted, colour augmentation.
for _name in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"):
    RECIPES[_name] = _r(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4, batch_size=256,
                        epochs=120, schedule="plateau", factor=0.1, patience=5, flip=True,
                        source="He et al. 2015, section 3.4",
                        note="plateau patience is not in the paper; ImageNet augmentation: random "
                             "224x224 crops with the shorter side in [256, 480], flips, colour "
                             "augmentation")

# He et al. 2015, section 4.2: batch 128, lr 0.1 divided by 10 at 32K and 48K iterations, stopped
# at 64K (on a 45K/5K train/val split: epochs 91, 136, 182), weight decay 1e-4, momentum 0.9; 4
# pixels padded on each side and a random 32x32 crop, flips. ResNet-110 (and its plain twin) warms
# up at lr 0.01 until the training error is below 80% (about 400 iterations, ~1 epoch).
for _depth in (20, 32, 44, 56, 110):
    for _kind in ("resnet", "plain"):
        RECIPES[f"{_kind}{_depth}"] = _r(
            optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4, batch_size=128, epochs=182,
            schedule="multistep", gamma=0.1, milestones=[91, 136], crop_padding=4,
            flip=True, warmup_epochs=1.0 if _depth == 110 else 0.0,
            warmup_lr=0.01 if _depth == 110 else None,
            source="He et al. 2015, section 4.2",
            note="the rate is divided by 10 at epochs 91 and 136" + (
                     "; the paper's warm-up is a constant 0.01 until training error < 80%, the "
                     "trainer's a linear ramp from lr/10" if _depth == 110 else ""))

# smallcnn is no paper's network, so its recipe is numconv's: Adam at 1e-3 (the usual choice for
# this baseline), batch 128, a cosine schedule over 15 epochs, no weight decay (dropout 0.5
# regularises the hidden layer) and no augmentation.
RECIPES["smallcnn"] = _r(optimizer="adam", lr=1e-3, batch_size=128, epochs=15, schedule="cosine",
                         source="numconv's recipe for the two-convolution baseline (Adam, cosine "
                                "schedule); no paper",
                         note="--crop-padding and --flip add augmentation")


def recipe(name, classic=False):
    """A copy of the training recipe of model `name` (LeNet-5's 1998 one with classic=True)."""
    if classic and name == "lenet5":
        name = "lenet5-classic"
    if name not in RECIPES:
        raise ValueError(f"model {name!r} is unknown; choose one of {', '.join(sorted(RECIPES))}")
    return copy.deepcopy(RECIPES[name])
