"""The commands with --device cuda under the CUDA simulator: train-image (interrupted, then resumed
with the device stored in its config.json), evaluate and predict on either device, and train-text
for the Kim CNN and the window tagger, each against the same run on the CPU to float32 tolerance.

The simulator runs each CUDA thread as Python (about a millisecond each), and one step of even a
narrowed LeNet-5 on 32x32 inputs is ~10^4 threads, tens of seconds here. So the image runs use
`tinynet`, registered for these tests only: conv 3x3 -> ReLU -> max pool -> Linear on 8x8 inputs,
the layers LeNet-5 is made of (tests/cuda_sim/test_training_on_device.py takes LeNet-5's own
steps on the device). What is tested here is the wiring: what moves where, checkpoints written from
the device, resume, evaluation and prediction across devices."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from cli.main import main
from numconv import config, models
from numconv.models import recipes
from numconv.models._common import Network, check_input
from numconv.nn import Conv2d, Flatten, Linear, MaxPool2d, ReLU
from numconv.train import image as image_train
from numconv.train import loop
from run_helpers import StopAfter

RTOL = 1e-4   # losses: float64 sums of float32 logits computed in another order


def _tinynet(num_classes, in_channels, input_size, width, rng):
    body = [("c1", Conv2d(in_channels, 2, 3, init="kaiming", rng=rng)), ("act1", ReLU()),
            ("s2", MaxPool2d(2))]
    C, H, W = check_input("tinynet", body, (in_channels,) + tuple(input_size))
    head = [("flatten", Flatten()), ("output", Linear(C * H * W, num_classes, init="kaiming",
                                                      rng=rng))]
    return Network("tinynet", (in_channels,) + tuple(input_size), num_classes, {}, body + head)


@pytest.fixture
def tinynet(monkeypatch):
    monkeypatch.setitem(models.MODELS, "tinynet", models.ModelSpec(_tinynet, (1, 8, 8), 2))
    monkeypatch.setitem(recipes.RECIPES, "tinynet", dict(recipes.RECIPES["lenet5"],
                                                         schedule="constant"))
    monkeypatch.setattr(config, "CUDA_CONV_FORWARD", "direct")   # fewer simulated threads


def _image_folder(root):
    """train/{a,b}: 3 images each, test/{a,b}: 1 each; 8x8 greyscale, a bright top or bottom."""
    from PIL import Image
    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("test", 1)):
        for label, rows in (("a", slice(0, 4)), ("b", slice(4, 8))):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 80, (8, 8))
                img[rows] += 150
                Image.fromarray(img.astype(np.uint8)).save(folder / f"{i}.png")
    return root


def _history(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _assert_same_run(got, want):
    for g, w in zip(_history(got), _history(want), strict=True):
        for key in ("train_loss", "val_loss"):
            np.testing.assert_allclose(g[key], w[key], rtol=RTOL, err_msg=f"{key} {g['epoch']}")
        assert (g["train_acc"], g["val_acc"]) == (w["train_acc"], w["val_acc"]), g["epoch"]
    g, w = (json.loads((run / "report.json").read_text()) for run in (got, want))
    np.testing.assert_allclose(g.pop("loss"), w.pop("loss"), rtol=RTOL)
    assert g == w


def test_train_image_on_the_gpu_resumes_evaluates_and_predicts_anywhere(tinynet, tmp_path,
                                                                        monkeypatch):
    data = _image_folder(tmp_path / "data")
    common = dict(model="tinynet", dataset=str(data), epochs=2, batch_size=2, optimizer="sgd",
                  lr=0.1, momentum=0.9, weight_decay=1e-3, val_fraction=0.34, seed=1)
    cpu, gpu = tmp_path / "cpu", tmp_path / "gpu"
    image_train.train_image(image_train.ImageConfig(**common, run_dir=str(cpu)))

    # 2 batches an epoch: stopped after the first batch of epoch 2, as Ctrl-C would
    flag = StopAfter(3)
    part = image_train.train_image(
        image_train.ImageConfig(**common, run_dir=str(gpu), device="cuda"),
        callbacks=loop.Callbacks(batch_end=flag.tick), stop_flag=flag)
    assert not part["finished"]
    assert json.loads((gpu / "config.json").read_text())["device"] == "cuda"
    uploads = []
    real = image_train.to_device
    monkeypatch.setattr(image_train, "to_device", lambda x: uploads.append(x.shape) or real(x))
    result = CliRunner().invoke(main, ["train-image", "--resume", str(gpu)])
    assert result.exit_code == 0, result.output
    assert uploads == [(2, 1, 8, 8)], "the resumed run trains its one batch left on the GPU"
    _assert_same_run(gpu, cpu)

    want = json.loads((gpu / "report.json").read_text())
    for device in ("cpu", "cuda"):
        report = image_train.evaluate_run(str(gpu), device=device)
        np.testing.assert_allclose(report.pop("loss"), want["loss"], rtol=RTOL)
        assert report == {k: v for k, v in want.items() if k != "loss"}, device
    result = CliRunner().invoke(main, ["evaluate", str(cpu), "--device", "cuda"])
    assert result.exit_code == 0, result.output
    assert f"top-1 error {want['top1_error']:.2%}" in result.output

    png = str(data / "test" / "b" / "0.png")
    on_cpu, on_gpu = (image_train.predict_files(str(gpu), [png], device=d)[0][1]
                      for d in ("cpu", "cuda"))
    np.testing.assert_allclose(on_gpu, on_cpu, rtol=1e-5, atol=1e-7)
    result = CliRunner().invoke(main, ["predict", str(gpu), png, "--device", "cuda"])
    assert result.exit_code == 0 and png in result.output, result.output


def _sentences(path):
    rng = np.random.default_rng(2)
    good, bad, filler = ["good", "great", "fine"], ["bad", "awful", "dull"], ["the", "film", "a"]
    rows = ["text,label"]
    for i in range(16):
        label = "pos" if i % 2 else "neg"
        words = list(rng.choice(filler, 3)) + [rng.choice(good if i % 2 else bad)]
        rows.append(f"{' '.join(rng.permutation(words)[:2 + i % 3])} {words[-1]},{label}")
    path.write_text("\n".join(rows) + "\n")
    return path


def _train_text(args, run, device):
    result = CliRunner().invoke(main, ["train-text", *args, "--epochs", "1", "--run-dir",
                                       str(run), "--device", device])
    assert result.exit_code == 0, result.output
    assert json.loads((run / "config.json").read_text())["device"] == device


def test_train_text_kim_cnn_on_the_gpu_matches_the_cpu(tmp_path):
    from numconv.text.train import evaluate_text_run, predict_text
    data = _sentences(tmp_path / "s.csv")
    args = ["--dataset", str(data), "--maps", "2", "--embed-dim", "3", "--widths", "2,3",
            "--batch-size", "5", "--val-fraction", "0.2", "--test-fraction", "0.2",
            "--no-baseline", "--threads", "1"]
    _train_text(args, tmp_path / "cpu", "cpu")
    _train_text(args, tmp_path / "gpu", "cuda")
    _assert_same_run(tmp_path / "gpu", tmp_path / "cpu")
    on_cpu = evaluate_text_run(str(tmp_path / "gpu"), device="cpu")
    on_gpu = evaluate_text_run(str(tmp_path / "gpu"), device="cuda")
    np.testing.assert_allclose(on_gpu.pop("loss"), on_cpu.pop("loss"), rtol=RTOL)
    assert on_gpu == on_cpu
    p_cpu, p_gpu = (predict_text(str(tmp_path / "cpu"), ["a good film"], device=d)[0]
                    for d in ("cpu", "cuda"))
    assert p_gpu["label"] == p_cpu["label"]
    np.testing.assert_allclose(list(p_gpu["probabilities"].values()),
                               list(p_cpu["probabilities"].values()), rtol=1e-5)


@pytest.mark.parametrize("loss", ["wll", "sll"])
def test_train_text_window_tagger_on_the_gpu_matches_the_cpu(tmp_path, loss):
    from numconv.text.train import predict_text
    rng = np.random.default_rng(0)
    nouns, verbs = ["dog", "Cat", "IBM"], ["runs", "sees"]
    for name, n in (("train", 10), ("test", 2)):
        lines = []
        for _ in range(n):
            toks = [("the", "DT", "B-NP"), (rng.choice(nouns), "NN", "I-NP"),
                    (rng.choice(verbs), "VBZ", "B-VP")][:2 + int(rng.integers(0, 2))]
            lines += [" ".join(t) for t in toks] + [""]
        (tmp_path / f"{name}.txt").write_text("\n".join(lines))
    # every input the tagger concatenates (words, caps, a POS column), and hidden dropout
    args = ["--model", "window", "--dataset", str(tmp_path), "--features", "pos",
            "--embed-dim", "3", "--feature-dim", "2", "--window", "3", "--hidden", "3",
            "--dropout", "0.5", "--batch-size", "4", "--lr", "0.05", "--threads", "1",
            "--loss", loss]   # sll: the transition scores and their gradient go through the host
    _train_text(args, tmp_path / "cpu", "cpu")
    _train_text(args, tmp_path / "gpu", "cuda")
    _assert_same_run(tmp_path / "gpu", tmp_path / "cpu")
    tags = [predict_text(str(tmp_path / "gpu"), ["the/DT dog/NN runs/VBZ"], device=d)[0]["tags"]
            for d in ("cpu", "cuda")]
    assert tags[0] == tags[1]
