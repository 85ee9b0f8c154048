"""numconv.interpret on a real (tiny) LeNet-5 run on scikit-learn's digits: the stage chain, the
filter grid's pixels, activation maximisation, nearest neighbours and their cache, shift
equivariance and the training curves."""
import io
import os

import numpy as np
import pytest

from numconv import interpret, models
from numconv.interpret import filters as filt
from numconv.train.image import ImageConfig, train_image

QUICK = dict(model="lenet5", dataset="digits", epochs=1, batch_size=64, optimizer="sgd", lr=0.05,
             momentum=0.9, schedule="constant", limit=320, seed=1)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run_dir = str(tmp_path_factory.mktemp("interp") / "run")
    train_image(ImageConfig(**dict(QUICK, run_dir=run_dir)))
    return interpret.open_run(run_dir)


def _png(path):
    from PIL import Image
    with Image.open(path) as img:
        return np.asarray(img)


# ------------------------------------------------------------------------------- the stage chain

def test_forward_to_and_backward_from_match_the_model(run):
    model = run.model
    x = run.prepare(run.training_split().x[:4])
    assert interpret.layer_names(model)[:3] == ["c1", "act1", "s2"]
    logits = model.forward(x)
    np.testing.assert_array_equal(interpret.forward_to(model, x, "output"), logits)
    np.testing.assert_array_equal(interpret.forward_to(model, x, "logits"), logits)
    manual = x
    for name in ("c1", "act1", "s2", "c3"):
        manual = model.children[name].forward(manual)
    np.testing.assert_array_equal(interpret.forward_to(model, x, "c3"), manual)
    d = np.random.default_rng(0).standard_normal(logits.shape).astype(np.float32)
    model.forward(x)
    want = model.children["c1"].backward(
        model.children["act1"].backward(model.children["s2"].backward(
            model.children["c3"].backward(np.ones_like(manual)))))
    interpret.forward_to(model, x, "c3")
    np.testing.assert_allclose(interpret.backward_from(model, "c3", np.ones_like(manual)), want,
                               rtol=1e-6)
    interpret.forward_to(model, x, "output")
    dx = interpret.backward_from(model, "output", d)
    assert dx.shape == x.shape and np.abs(dx).sum() > 0
    model.zero_grad()


def test_nested_names_and_unknown_layer():
    net = models.build_model("resnet20", input_size=8, width=0.25, seed=0).eval()
    names = interpret.layer_names(net)
    assert "layer1" in names and "layer1.0" in names and "fc" in names
    assert "layer1.0.conv1" not in names      # inside a residual block: not a chain stage
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    manual = x
    for name in ("conv1", "bn1", "relu", "layer1"):
        manual = net.children[name].forward(manual)
    np.testing.assert_array_equal(interpret.forward_to(net, x, "layer1"), manual)
    assert interpret.default_feature_layer(net) == "avgpool"
    with pytest.raises(ValueError, match=r"layer 'nope' is unknown; valid layers: conv1, bn1"):
        interpret.get_layer(net, "nope")


# -------------------------------------------------------------------------------------- filters

def test_filter_grid_pixels_are_the_normalised_weights(run, tmp_path):
    grid = interpret.first_layer_grid(run.model)
    w = run.model.children["c1"].params["weight"]
    assert grid.file_name == "filters-c1-6x1x5x5.png"
    path = tmp_path / grid.file_name
    from numconv.interpret.figures import write_filter_grid
    write_filter_grid(grid, str(path))
    pixels = _png(str(path))
    norm = (w - w.reshape(6, -1).min(1)[:, None, None, None]) / np.ptp(
        w.reshape(6, -1), axis=1)[:, None, None, None]
    s = grid.scale
    for o in range(6):
        top, left = grid.tiles[(o, None)]
        tile = pixels[top:top + 5 * s, left:left + 5 * s]
        expect = np.repeat(np.repeat(np.rint(norm[o, 0] * 255), s, 0), s, 1)
        np.testing.assert_array_equal(tile, expect)
        assert tile.min() == 0 and tile.max() == 255   # each filter spans its own full range


def test_rgb_filter_grid():
    net = models.build_model("resnet20", input_size=8, width=0.25, seed=0)
    grid = interpret.first_layer_grid(net, scale=2)
    w = net.children["conv1"].params["weight"]            # (4, 3, 3, 3)
    assert grid.image.ndim == 3 and grid.image.shape[2] == 3
    top, left = grid.tiles[(1, None)]
    tile = grid.image[top:top + 6:2, left:left + 6:2]      # one pixel per weight
    np.testing.assert_array_equal(tile, filt.to_pixels(filt.normalise_filters(w)[1]).transpose(
        1, 2, 0))


# --------------------------------------------------------------------------- activation maximum

def test_maximize_raises_the_target_by_a_large_factor(run):
    res = interpret.maximize(run.model, "logits", [0, 7], run.input_shape, run.mean, run.std,
                             interpret.MaxSettings(steps=40, start="mean", seed=0))
    assert res.images.shape == (2,) + run.input_shape
    real = run.model.forward(run.prepare(run.training_split().x[:200]))[:, [0, 7]].max(axis=0)
    for start, final, best_real in zip(res.start_activation, res.final_activation, real):
        assert final > 10 * max(abs(start), 0.05), (start, final)
        assert final > best_real          # more than any of 200 training images gets
    # Each step of the ascent used the true input gradient: the objective rose.
    assert np.all(res.history[-1] > res.history[0])
    # The images stay valid pixels.
    lo = (0 - run.mean[0]) / run.std[0]
    hi = (1 - run.mean[0]) / run.std[0]
    assert res.images.min() >= lo - 1e-5 and res.images.max() <= hi + 1e-5


def test_maximize_rejects_bad_channels(run):
    with pytest.raises(ValueError, match=r"channel 6 is out of range for layer c1, which has 6 "
                                         r"channels; use 0..5"):
        interpret.maximize(run.model, "c1", [6], run.input_shape, run.mean, run.std,
                           interpret.MaxSettings(steps=1))


# ---------------------------------------------------------------------------- nearest neighbours

def test_neighbors_include_the_image_itself_and_the_cache_is_keyed(run, tmp_path):
    from PIL import Image
    split = run.training_split()
    paths = []
    for i in (3, 11):
        p = tmp_path / f"train{i}.png"
        Image.fromarray(split.x[i, 0]).save(p)
        paths.append(str(p))
    stored, x = interpret.load_images_for(run, paths, tuple(split.x.shape[2:]))
    res = interpret.neighbors(run, x, k=4)
    assert res.layer == "act6" and not res.bank.cached
    assert list(res.indices[:, 0]) == [3, 11]
    # The same pixels through the same layers: distance 0 up to float32 rounding of batched BLAS.
    assert np.all(res.distances[:, 0] <= 1e-5 * res.distances[:, 1])
    again = interpret.neighbors(run, x, k=4)
    assert again.bank.cached and again.bank.path == res.bank.path
    np.testing.assert_array_equal(again.indices, res.indices)
    # The key follows the weights and the data.
    key = res.bank.key
    import shutil
    other = tmp_path / "ckpt.npz"
    shutil.copy(run.checkpoint, other)
    with open(other, "ab") as f:
        f.write(b"\0")
    assert interpret.cache_key(str(other), split, "act6", run.input_shape, run.mean,
                               run.std) != key
    from numconv.data.images import Split
    fewer = Split(split.x[:-1], split.y[:-1])
    assert interpret.cache_key(run.checkpoint, fewer, "act6", run.input_shape, run.mean,
                               run.std) != key
    assert interpret.cache_key(run.checkpoint, split, "f6", run.input_shape, run.mean,
                               run.std) != key


def test_nearest_is_exact_on_identical_rows():
    bank = np.random.default_rng(0).standard_normal((50, 7)).astype(np.float32)
    idx, dist = interpret.nearest(bank, bank[[4, 9]], 3)
    assert list(idx[:, 0]) == [4, 9] and np.all(dist[:, 0] == 0)
    assert np.all(np.diff(dist, axis=1) >= 0)


# -------------------------------------------------------------------------------- equivariance

def test_shift_image():
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    s = interpret.shift_image(x, 1, -2, [-1.0])
    np.testing.assert_array_equal(s[0, 0, 1:, :2], x[0, 0, :3, 2:])
    assert np.all(s[0, 0, 0] == -1) and np.all(s[0, 0, :, 2:] == -1)


def test_conv_layers_are_equivariant_in_the_interior(run):
    x = run.prepare(run.training_split().x[5:6])
    rep = interpret.measure_shift(run.model, x, 0, 3, run.black(), keep_maps=["c1"])
    by = {r.name: r for r in rep.layers}
    assert set(by) == {"c1", "c3", "c5"}
    assert by["c1"].exact and by["c1"].interior > 0 and by["c1"].error < 1e-6
    # c3 sits behind a stride-2 pool: a 3-pixel shift is not a multiple of 2...
    assert not by["c3"].exact and by["c3"].error > 1e-3
    # ... a 4-pixel shift is, and then c3 is equivariant too.
    rep4 = interpret.measure_shift(run.model, x, 2, 4, run.black())
    by4 = {r.name: r for r in rep4.layers}
    assert by4["c3"].exact and by4["c3"].shift == (1, 2) and by4["c3"].error < 1e-5
    assert rep.maps["c1"][0].shape == (6, 28, 28)
    assert 0 < rep.invariance < np.inf
    zero = interpret.measure_shift(run.model, x, 0, 0, run.black())
    assert zero.invariance < 1e-6


# --------------------------------------------------------------------------------------- curves

def test_plot_runs_overlays_runs(run, tmp_path):
    out = tmp_path / "curves.png"
    path = interpret.plot_runs([run.run_dir, run.run_dir], str(out))
    assert path == str(out)
    pixels = _png(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and len(np.unique(pixels.reshape(-1,
                                                                           pixels.shape[2]),
                                                                           axis=0)) > 10
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]
    records = interpret.load_metrics(run.run_dir)
    assert records[0]["epoch"] == 1 and "val_acc" in records[0]
    with pytest.raises(ValueError, match="has no metrics.jsonl"):
        interpret.plot_runs([str(tmp_path)], str(out))
