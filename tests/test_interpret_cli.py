"""`numconv visualize`, `numconv neighbors` and `numconv plot` driven through click on a tiny real
run: the files they write, one-line errors for bad input, and the install hint without
matplotlib."""
import os
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from cli.main import main
from numconv.train.image import ImageConfig, train_image

QUICK = dict(model="lenet5", dataset="digits", epochs=1, batch_size=64, optimizer="sgd", lr=0.05,
             momentum=0.9, schedule="constant", limit=256, seed=2)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("cli") / "run")
    train_image(ImageConfig(**dict(QUICK, run_dir=path)))
    return path


@pytest.fixture(scope="module")
def digit_png(run_dir, tmp_path_factory):
    """Training image 0 of the run, as an 8x8 greyscale PNG."""
    from PIL import Image
    from numconv import interpret
    split = interpret.open_run(run_dir).training_split()
    path = str(tmp_path_factory.mktemp("img") / "digit.png")
    Image.fromarray(split.x[0, 0]).save(path)
    return path


def open_text(path):
    with open(path) as f:
        return f.read()


def _ok(args):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return result.output


def _fails(args, *needles):
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    for needle in needles:
        assert needle in result.output, (needle, result.output)
    return result.output


def test_commands_write_their_pictures(run_dir, digit_png, tmp_path):
    out = _ok(["visualize", "filters", run_dir])
    assert os.path.exists(os.path.join(run_dir, "filters-c1-6x1x5x5.png")) and "6 filters" in out
    out = _ok(["visualize", "maximize", run_dir, "--layer", "logits", "--channel", "1,2",
               "--channel", "3", "--steps", "5", "--out", str(tmp_path)])
    assert os.path.exists(tmp_path / "maximize-output-1_2_3.png") and "class 3" in out
    out = _ok(["neighbors", run_dir, digit_png, "-k", "3"])
    assert os.path.exists(os.path.join(run_dir, "neighbors-act6.png"))
    assert "computed, cached in" in out and f"{digit_png}: #0 " in out
    assert "read from" in _ok(["neighbors", run_dir, digit_png, "-k", "3"])
    out = _ok(["visualize", "shift", run_dir, digit_png, "--dx", "3", "--dy", "0"])
    assert os.path.exists(os.path.join(run_dir, "shift-c1-dy0-dx3.png"))
    assert "c1" in out and "invariance error" in out
    _ok(["plot", run_dir])
    _ok(["plot", run_dir, run_dir, "--out", str(tmp_path / "both.png")])
    assert os.path.exists(os.path.join(run_dir, "curves.png"))
    assert os.path.exists(tmp_path / "both.png")
    for folder in (run_dir, str(tmp_path)):
        assert not [f for f in os.listdir(folder) if f.startswith(".tmp-")]


def test_bad_input_gets_one_line(run_dir, digit_png, tmp_path):
    from PIL import Image
    _fails(["visualize", "maximize", run_dir, "--layer", "c9", "--channel", "0"],
           "layer 'c9' is unknown; valid layers: c1, act1, s2, c3")
    _fails(["visualize", "maximize", run_dir, "--layer", "c3", "--channel", "16"],
           "channel 16 is out of range for layer c3, which has 16 channels; use 0..15")
    _fails(["neighbors", run_dir, digit_png, "--layer", "nope"], "layer 'nope' is unknown")
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(rgb)
    _fails(["neighbors", run_dir, str(rgb)], "is RGB", "takes greyscale (mode L) images",
           "convert('L')")
    big = tmp_path / "big.png"
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(big)
    _fails(["visualize", "shift", run_dir, str(big)], "is 20x20", "32x32 (the model's input)",
           "8x8 (the training images)")
    _fails(["neighbors", run_dir, str(tmp_path / "missing.png")], "does not exist")
    empty = tmp_path / "empty"
    empty.mkdir()
    _fails(["visualize", "filters", str(empty)], "no config.json")
    _fails(["visualize", "filters", str(tmp_path / "nowhere")], "does not exist")
    half = tmp_path / "half"
    half.mkdir()
    (half / "config.json").write_text(open_text(os.path.join(run_dir, "config.json")))
    _fails(["visualize", "shift", str(half), digit_png], "has no checkpoint yet")
    _fails(["plot", str(empty)], "has no metrics.jsonl")


def test_without_matplotlib_the_commands_say_how_to_install(run_dir, digit_png, monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)   # import matplotlib -> ImportError
    for args in (["plot", run_dir],
                 ["visualize", "maximize", run_dir, "--layer", "c1", "--channel", "0"],
                 ["visualize", "shift", run_dir, digit_png],
                 ["neighbors", run_dir, digit_png]):
        _fails(args, "matplotlib, which is not installed", "pip install")
    # The filter grid is written with Pillow alone.
    _ok(["visualize", "filters", run_dir])


def test_text_run_filters_list_the_ngrams_that_excite_them(tmp_path):
    text = pytest.importorskip("numconv.text.train")
    run = str(tmp_path / "text")
    text.train_text(text.TextConfig(epochs=1, maps=3, embed_dim=8, widths=(2, 3), limit=120,
                                    baseline=False, run_dir=run))
    out = _ok(["visualize", "filters", run, "--top", "2"])
    assert "conv0 (width 2) filter 0:" in out and "conv1 (width 3) filter 2:" in out
    assert os.path.exists(os.path.join(run, "filters-ngrams.txt"))
    from numconv.interpret.text_filters import kim_filter_ngrams
    _, _, vocab, model = text.load_text_run(run)
    rows = kim_filter_ngrams(run, top=2)
    assert len(rows) == 6
    for r in rows:
        conv = model.children[r.conv]
        for gram, value in r.top:
            words = gram.split(" ")
            if "_" in words:
                continue
            # The listed activation is the filter applied to exactly these words.
            ids = np.array([vocab.encode(words)], np.int64)
            x = np.ascontiguousarray(model.embedding.forward(ids).transpose(0, 2, 1))
            y = conv.forward(x)
            assert y.shape[2] == 1
            assert abs(float(y[0, r.filter, 0]) - value) < 1e-4
        values = [v for _, v in r.top]
        assert values == sorted(values, reverse=True)
