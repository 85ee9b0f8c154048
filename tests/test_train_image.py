"""The image pipeline end to end on scikit-learn's 8x8 digits (real, embedded, offline): run
directory contents, exact resume, NaN guard, atomic checkpoints, bad input, export/evaluate/predict."""
import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from cli.main import main
from numconv.train import loop
from numconv.train.checkpoint import CheckpointError, checkpoint_path, load_checkpoint
from numconv.train.image import ImageConfig, train_image
from run_helpers import StopAfter, strip_timings

QUICK = dict(model="lenet5", dataset="digits", epochs=2, batch_size=64, optimizer="sgd", lr=0.05,
             momentum=0.9, schedule="constant", limit=640, seed=3)


def _cfg(tmp_path, name="run", **over):
    return ImageConfig(**dict(QUICK, run_dir=str(tmp_path / name), **over))


def test_run_directory_and_report(tmp_path):
    summary = train_image(_cfg(tmp_path))
    run = tmp_path / "run"
    assert summary["finished"] and summary["epochs_done"] == 2
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    config = json.loads((run / "config.json").read_text())
    assert config["model"] == "lenet5" and config["dataset_name"] == "digits"
    assert config["batch_size"] == 64 and config["input_shape"] == [1, 32, 32]
    report = json.loads((run / "report.json").read_text())
    cm = np.array(report["confusion_matrix"])
    assert cm.shape == (10, 10) and cm.sum() == report["count"]
    assert report["top5_error"] <= report["top1_error"]
    assert np.trace(cm) / cm.sum() == pytest.approx(1 - report["top1_error"])
    # It learned something real from 320 images in two epochs.
    assert report["top1_error"] < 0.5
    for which in ("last", "best"):
        with np.load(checkpoint_path(str(run), which), allow_pickle=False) as z:
            assert "model/0.weight" in z.files or any(k.startswith("model/") for k in z.files)


def test_same_seed_same_metrics_and_exact_resume(tmp_path):
    full = train_image(_cfg(tmp_path, "full", epochs=3))
    flag = StopAfter(12)   # 640 images / 64 = 10 batches an epoch: stops inside epoch 2
    cb = loop.Callbacks(batch_end=flag.tick)
    part = train_image(_cfg(tmp_path, "part", epochs=3), callbacks=cb, stop_flag=flag)
    assert not part["finished"] and part["epochs_done"] == 1
    _, _, _, meta = load_checkpoint(checkpoint_path(str(tmp_path / "part")))
    assert (meta["epoch"], meta["batch"]) == (1, 2)
    resumed = train_image(ImageConfig(run_dir=str(tmp_path / "part")), resume=True)
    assert resumed["finished"]
    assert strip_timings(resumed["history"]) == strip_timings(full["history"])
    again = train_image(_cfg(tmp_path, "again", epochs=3))
    assert strip_timings(again["history"]) == strip_timings(full["history"])
    assert resumed["test"]["confusion_matrix"] == full["test"]["confusion_matrix"]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    train_image(_cfg(tmp_path, epochs=1))
    last = checkpoint_path(str(tmp_path / "run"), "last")
    before = open(last, "rb").read()
    cfg = ImageConfig(run_dir=str(tmp_path / "run"))
    # Resume with an absurd learning rate by editing the stored configuration.
    doc = json.loads((tmp_path / "run" / "config.json").read_text())
    doc.update(epochs=3, lr=1e12)
    (tmp_path / "run" / "config.json").write_text(json.dumps(doc))
    with pytest.raises(loop.TrainingDiverged, match="the loss became"):
        train_image(cfg, resume=True)
    assert open(last, "rb").read() == before


def test_nan_loss_in_the_first_epoch_leaves_a_reusable_run_directory(tmp_path):
    """Diverged before its first checkpoint: the directory holds only config.json. A new run
    may take it over, and --resume says there is nothing to resume rather than a missing file."""
    with pytest.raises(loop.TrainingDiverged, match="the loss became"):
        train_image(_cfg(tmp_path, epochs=1, lr=1e12))
    run = tmp_path / "run"
    assert (run / "config.json").exists()
    assert not os.path.exists(checkpoint_path(str(run), "last"))
    with pytest.raises(CheckpointError, match="has no checkpoint"):
        train_image(ImageConfig(run_dir=str(run)), resume=True)
    summary = train_image(_cfg(tmp_path, epochs=1))
    assert summary["finished"] and os.path.exists(checkpoint_path(str(run), "last"))
    assert json.loads((run / "config.json").read_text())["lr"] == QUICK["lr"]


def test_failed_save_leaves_previous_checkpoint(tmp_path, monkeypatch):
    train_image(_cfg(tmp_path, epochs=1))
    last = checkpoint_path(str(tmp_path / "run"), "last")
    before = open(last, "rb").read()
    from numconv.train import checkpoint as ck

    def broken(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(ck.np, "savez", broken)
    with pytest.raises(OSError):
        ck.save_checkpoint(last, {"w": np.zeros(3)})
    assert open(last, "rb").read() == before
    assert not [f for f in os.listdir(os.path.dirname(last)) if f.startswith(".tmp-")]


def test_corrupt_checkpoint_and_bad_run_dirs(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(str(bad))
    with pytest.raises(CheckpointError, match="nothing to resume"):
        train_image(ImageConfig(run_dir=str(tmp_path / "missing")), resume=True)
    train_image(_cfg(tmp_path, epochs=1))
    with pytest.raises(CheckpointError, match="already holds a run"):
        train_image(_cfg(tmp_path, epochs=1))
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(str(locked), os.W_OK):
            pytest.skip("running as a user who can write anywhere")
        with pytest.raises(CheckpointError, match="not writable|cannot create"):
            train_image(_cfg(tmp_path / "locked", "sub"))
    finally:
        locked.chmod(0o700)


def test_cli_errors_are_one_line(tmp_path):
    runner = CliRunner()
    for args, needle in [
        (["--model", "nope"], "model 'nope' is unknown"),
        (["--dataset", str(tmp_path / "nowhere")], "nowhere"),
        (["--dataset", "digits", "--epochs", "0"], "--epochs must be >= 1"),
        (["--dataset", "digits", "--model", "alexnet", "--input-size", "16"], "too small"),
        (["--dataset", "digits", "--crop-padding", "-1"], "--crop-padding"),
        (["--dataset", "digits", "--no-augment", "--flip"], "--no-augment turns off"),
        (["--dataset", "digits", "--augment"], "recipe has none"),
        (["--dataset", "digits", "--optimizer", "adam", "--momentum", "0.5"],
         "--momentum applies to SGD only"),
        (["--dataset", "digits", "--model", "smallcnn", "--nesterov"], "optimiser is adam"),
        (["--dataset", "digits", "--milestones", "3,6"], "--milestones applies to the multistep"),
        (["--dataset", "digits", "--schedule", "cosine", "--patience", "2"],
         "--patience applies to the plateau schedule"),
        (["--dataset", "digits", "--schedule", "step", "--step-size", "0"], "--step-size"),
        (["--dataset", "digits", "--lr-values", "0.1,x"], "positive rates"),
        (["--dataset", "digits", "--classic", "--milestones", "3,6"], "--lr-values"),
        (["--dataset", "digits", "--threads", "0"], "--threads"),
        (["--dataset", "digits", "--limit", "0"], "--limit"),
    ]:
        result = runner.invoke(main, ["train-image", "--run-dir", str(tmp_path / "r")] + args)
        assert result.exit_code != 0, args
        assert needle in result.output, (args, result.output)
        assert "Traceback" not in result.output
        assert not (tmp_path / "r").exists(), args           # nothing written half-way


def test_cli_train_evaluate_predict_export(tmp_path):
    runner = CliRunner()
    run = str(tmp_path / "cli")
    result = runner.invoke(main, ["train-image", "--dataset", "digits", "--epochs", "1",
                                  "--batch-size", "64", "--lr", "0.05", "--limit", "256",
                                  "--run-dir", run])
    assert result.exit_code == 0, result.output
    assert "test: top-1 error" in result.output and "digits" in result.output
    assert json.loads(open(os.path.join(run, "config.json")).read())["device"] == "cpu"
    # auto: the GPU where one is usable (the report agrees to the printed digits), else the CPU
    result = runner.invoke(main, ["evaluate", run, "--device", "auto"])
    assert result.exit_code == 0, result.output
    report = json.loads(open(os.path.join(run, "report.json")).read())
    assert f"top-1 error {report['top1_error']:.2%}" in result.output
    from PIL import Image
    img = tmp_path / "digit.png"
    Image.fromarray((np.eye(8) * 255).astype(np.uint8)).save(img)
    result = runner.invoke(main, ["predict", run, str(img)])
    assert result.exit_code == 0, result.output
    assert str(img) in result.output and "%" in result.output
    big = tmp_path / "digit-big.png"                  # files of different sizes, one command
    Image.fromarray((np.eye(16) * 255).astype(np.uint8)).save(big)
    result = runner.invoke(main, ["predict", run, str(img), str(big)])
    assert result.exit_code == 0, result.output
    assert str(img) in result.output and str(big) in result.output
    result = runner.invoke(main, ["export", run])
    assert result.exit_code == 0, result.output
    assert os.path.exists(os.path.join(run, "model.safetensors"))
    result = runner.invoke(main, ["evaluate", str(tmp_path / "none")])
    assert result.exit_code != 0 and "does not exist" in result.output


def test_export_loads_into_pytorch_lenet(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file
    from numconv.train.export import export_safetensors
    from numconv.train.runs import load_run
    train_image(_cfg(tmp_path, epochs=1))
    run = str(tmp_path / "run")
    path, _ = export_safetensors(run)
    _, model = load_run(run)
    names = [n for n, _, _ in model.named_parameters()]
    tnn = torch.nn
    # The modern LeNet-5 as PyTorch would write it; numconv's names must fit it exactly.
    layers = {}
    for name, layer in model.children.items():
        kind = type(layer).__name__
        if kind == "Conv2d":
            layers[name] = tnn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                                      layer.stride, layer.padding)
        elif kind == "Linear":
            layers[name] = tnn.Linear(layer.in_features, layer.out_features)
        elif kind == "ReLU":
            layers[name] = tnn.ReLU()
        elif kind == "MaxPool2d":
            layers[name] = tnn.MaxPool2d(layer.kernel_size, layer.stride)
        elif kind == "Flatten":
            layers[name] = tnn.Flatten()
        else:
            pytest.fail(f"unexpected layer {kind} in lenet5")
    from collections import OrderedDict
    tmodel = tnn.Sequential(OrderedDict((k, layers[k]) for k in model.children))
    tmodel.load_state_dict(load_file(path))
    assert sorted(tmodel.state_dict()) == sorted(names)
    x = np.random.default_rng(0).standard_normal((5, 1, 32, 32)).astype(np.float32)
    with torch.no_grad():
        ref = tmodel(torch.tensor(x)).numpy()
    np.testing.assert_allclose(model.forward(x), ref, rtol=1e-4, atol=1e-5)


def test_smallcnn_trains_and_exports_into_its_pytorch_twin(tmp_path):
    """smallcnn through the whole pipeline (its Adam recipe, digits fitted to 28x28), then its
    weights into the nn.Sequential a PyTorch user would write: same names, same logits."""
    torch = pytest.importorskip("torch")
    from collections import OrderedDict

    from safetensors.torch import load_file
    from numconv.train.export import export_safetensors
    from numconv.train.runs import load_run
    summary = train_image(ImageConfig(model="smallcnn", dataset="digits", epochs=1, limit=256,
                                      width=0.25, seed=3, run_dir=str(tmp_path / "run")))
    assert summary["finished"]
    run = str(tmp_path / "run")
    config = json.load(open(os.path.join(run, "config.json")))
    assert config["input_shape"] == [1, 28, 28] and config["optimizer"] == "adam"
    path, n = export_safetensors(run)
    assert n == 8
    _, model = load_run(run)
    model.eval()
    tnn = torch.nn
    tmodel = tnn.Sequential(OrderedDict([
        ("features", tnn.Sequential(tnn.Conv2d(1, 8, 3, padding=1), tnn.ReLU(), tnn.MaxPool2d(2),
                                    tnn.Conv2d(8, 16, 3, padding=1), tnn.ReLU(),
                                    tnn.MaxPool2d(2))),
        ("flatten", tnn.Flatten()),
        ("classifier", tnn.Sequential(tnn.Linear(16 * 7 * 7, 32), tnn.ReLU(), tnn.Dropout(0.5),
                                      tnn.Linear(32, 10)))]))
    tmodel.load_state_dict(load_file(path))
    tmodel.eval()
    x = np.random.default_rng(0).standard_normal((5, 1, 28, 28)).astype(np.float32)
    with torch.no_grad():
        ref = tmodel(torch.tensor(x)).numpy()
    np.testing.assert_allclose(model.forward(x), ref, rtol=1e-4, atol=1e-5)


def test_cli_crop_and_flip_override_the_recipe(tmp_path):
    """LeNet's recipe has no augmentation; --crop-padding and --flip add it, are recorded in the
    run's configuration and change what the network sees (so the metrics differ)."""
    runner = CliRunner()
    common = ["train-image", "--dataset", "digits", "--epochs", "1", "--batch-size", "64",
              "--lr", "0.05", "--limit", "256"]
    runs = {}
    for name, extra in (("plain", []), ("aug", ["--crop-padding", "2", "--flip"])):
        run = str(tmp_path / name)
        result = runner.invoke(main, common + extra + ["--run-dir", run])
        assert result.exit_code == 0, result.output
        runs[name] = run
    plain = json.load(open(os.path.join(runs["plain"], "config.json")))
    aug = json.load(open(os.path.join(runs["aug"], "config.json")))
    assert (plain["crop_padding"], plain["flip"]) == (0, False)
    assert (aug["crop_padding"], aug["flip"]) == (2, True)

    def history(run):
        return strip_timings([json.loads(line) for line in
                              open(os.path.join(run, "metrics.jsonl"))])
    assert history(runs["plain"]) != history(runs["aug"])


@pytest.mark.skipif(os.name != "posix", reason="sends SIGINT")
def test_ctrl_c_saves_a_checkpoint_exits_cleanly_and_resumes(tmp_path):
    """A real SIGINT to a real `numconv train-image` process mid-training: it finishes the step,
    saves the last checkpoint, says how to continue and exits 0; --resume then carries on from
    the saved epoch and batch to the end."""
    import signal
    import subprocess
    import sys
    import time
    run = str(tmp_path / "sigint")
    cmd = [sys.executable, "-m", "cli.main", "train-image", "--dataset", "digits",
           "--batch-size", "16", "--lr", "0.05", "--limit", "256", "--run-dir", run]
    proc = subprocess.Popen(cmd + ["--epochs", "500"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    metrics = os.path.join(run, "metrics.jsonl")
    deadline = time.monotonic() + 300
    while not os.path.exists(metrics):          # an epoch done: the loop's handler is in place
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0][-2000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-2000:]
    assert "interrupted" in out and "continue with: numconv train-image --resume" in out
    assert "Traceback" not in out
    meta = load_checkpoint(checkpoint_path(run, "last"))[3]
    done = meta["epoch"]
    assert 1 <= done < 500
    # options the saved configuration fixes are refused, not silently ignored
    result = CliRunner().invoke(main, ["train-image", "--resume", run, "--epochs", "3",
                                       "--lr", "0.1"])
    assert result.exit_code != 0 and "--epochs, --lr would be ignored" in result.output
    # (cut the saved run short so that resuming it finishes quickly)
    cfg_path = os.path.join(run, "config.json")
    saved = json.loads(open(cfg_path).read())
    saved["epochs"] = done + 1
    open(cfg_path, "w").write(json.dumps(saved))
    result = CliRunner().invoke(main, ["train-image", "--resume", run, "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "test: top-1 error" in result.output
    lines = open(metrics).read().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == list(range(1, done + 2))


def test_cli_schedule_options_override_the_recipe(tmp_path):
    """--schedule step --step-size 1 --gamma 0.5: the rate halves every epoch, and the resolved
    configuration records what was asked."""
    run = tmp_path / "sched"
    result = CliRunner().invoke(main, ["train-image", "--dataset", "digits", "--epochs", "2",
                                       "--limit", "128", "--lr", "0.04", "--schedule", "step",
                                       "--step-size", "1", "--gamma", "0.5", "--run-dir", str(run)])
    assert result.exit_code == 0, result.output
    cfg = json.loads((run / "config.json").read_text())
    assert (cfg["schedule"], cfg["step_size"], cfg["gamma"]) == ("step", 1, 0.5)
    lrs = [json.loads(line)["lr"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert lrs == pytest.approx([0.04, 0.02])


def test_checkpoint_of_another_model_is_refused_in_one_line(tmp_path):
    """A run directory whose checkpoint does not fit the model its config.json names (here the
    configuration edited to another architecture): evaluate, predict and --resume each fail with
    one clear line, and nothing in the run is rewritten."""
    train_image(_cfg(tmp_path, epochs=1))
    run = tmp_path / "run"
    doc = json.loads((run / "config.json").read_text())
    doc["model"] = "smallcnn"
    (run / "config.json").write_text(json.dumps(doc))
    last = checkpoint_path(str(run), "last")
    before = open(last, "rb").read()
    runner = CliRunner()
    for args in (["evaluate", str(run)], ["train-image", "--resume", str(run)]):
        result = runner.invoke(main, args)
        assert result.exit_code == 1, (args, result.output)
        assert "Traceback" not in result.output
        errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1 and "does not match" in errors[0], result.output
    assert open(last, "rb").read() == before


def test_resnet20_exports_into_its_pytorch_twin(tmp_path):
    """A CIFAR ResNet (batch norm with its running statistics, residual joins, the paper's
    option-A shortcuts) trained for an epoch at a quarter width, exported: the safetensors file
    loads strictly into the network a PyTorch user would write, and gives the same logits in
    eval mode."""
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    from numconv.train.export import export_safetensors
    from numconv.train.runs import load_run
    tnn, tf = torch.nn, torch.nn.functional
    train_image(_cfg(tmp_path, model="resnet20", width=0.25, input_size=16, epochs=1,
                     optimizer="sgd", lr=0.05, schedule="constant"))
    run = str(tmp_path / "run")
    path, _ = export_safetensors(run)
    cfg_doc, model = load_run(run)

    class Block(tnn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = tnn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = tnn.BatchNorm2d(cout)
            self.conv2 = tnn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = tnn.BatchNorm2d(cout)
            self.stride, self.extra = stride, cout - cin

        def forward(self, x):
            out = self.bn2(self.conv2(tf.relu(self.bn1(self.conv1(x)))))
            short = x[:, :, ::self.stride, ::self.stride]
            if self.extra:                            # option A: zero channels after the input's
                short = tf.pad(short, (0, 0, 0, 0, 0, self.extra))
            return tf.relu(out + short)

    class ResNet20(tnn.Module):
        def __init__(self, cin, widths, classes):
            super().__init__()
            self.conv1 = tnn.Conv2d(cin, widths[0], 3, 1, 1, bias=False)
            self.bn1 = tnn.BatchNorm2d(widths[0])
            cin, stages = widths[0], []
            for i, w in enumerate(widths):
                stages.append(tnn.Sequential(*[Block(cin if j == 0 else w, w,
                                                     2 if (i and j == 0) else 1)
                                               for j in range(3)]))
                cin = w
            self.layer1, self.layer2, self.layer3 = stages
            self.fc = tnn.Linear(widths[-1], classes)

        def forward(self, x):
            x = tf.relu(self.bn1(self.conv1(x)))
            x = self.layer3(self.layer2(self.layer1(x)))
            return self.fc(x.mean(dim=(2, 3)))

    widths = [model.children["layer%d" % i].children["0"].children["conv1"].out_channels
              for i in (1, 2, 3)]
    channels = model.children["conv1"].in_channels      # digits as RGB, as CIFAR's are
    tmodel = ResNet20(channels, widths, len(cfg_doc["classes"]))
    tmodel.load_state_dict(load_file(path), strict=True)
    tmodel.eval()
    model.eval()
    x = np.random.default_rng(0).standard_normal((6, channels, 16, 16)).astype(np.float32)
    with torch.no_grad():
        ref = tmodel(torch.tensor(x)).numpy()
    np.testing.assert_allclose(model.forward(x), ref, rtol=1e-4, atol=1e-4)
    assert not np.allclose(ref, ref[:1])                # a network that tells inputs apart
