"""Streamed training (`numconv train-image --stream`) on local parquet files and image folders read
through `datasets` streaming: same results as the in-memory path where the order is the same,
position-based carving, seeded per-epoch shuffling, exact resume, bounded memory, and one-line
errors. Nothing reaches a network (offline, with an empty Hugging Face cache in tmp_path)."""
import io
import json
import tracemalloc

import numpy as np
import pytest
from click.testing import CliRunner

from numconv.data import _transforms, images, streaming
from numconv.train import image as train_mod
from numconv.train import loop
from numconv.train.image import ImageConfig, make_preparer, train_image
from run_helpers import StopAfter, strip_timings

Image = pytest.importorskip("PIL.Image")
datasets = pytest.importorskip("datasets")


@pytest.fixture(autouse=True)
def hf_sandbox(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_home" / "datasets"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def png(arr):
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def write_parquet(path, n, size=(12, 12), classes=("a", "b", "c"), seed=0, rows_per_group=16,
                  odd=None):
    """n random images (label i % K) as a parquet file with Image and ClassLabel features.
    `odd`: {row: shape} for rows whose image has another shape."""
    rng = np.random.default_rng(seed)
    shape = lambda i: (odd or {}).get(i, size)
    feats = datasets.Features({"image": datasets.Image(),
                               "label": datasets.ClassLabel(names=list(classes))})
    rows = [{"image": {"bytes": png(rng.integers(0, 256, shape(i), dtype=np.uint8)), "path": None},
             "label": i % len(classes)} for i in range(n)]
    path.parent.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_list(rows, features=feats).to_parquet(str(path),
                                                                batch_size=rows_per_group)
    return path


def write_folder(root, sizes=(("train", 8), ("val", 2), ("test", 2)), classes=("a", "b", "c"),
                 size=(28, 28), seed=0):
    rng = np.random.default_rng(seed)
    for split, per_class in sizes:
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, size, dtype=np.uint8)).save(
                    root / split / c / f"{i:02d}.png")
    return root


def indices(split):
    return [row["index"] for row in split.rows()]


class _InOrder(train_mod.EpochBatches):
    """The in-memory epochs without shuffling: the order a stream without a buffer has."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, shuffle=False, **kwargs)


# --------------------------------------------------------------------------------------- splits

def test_carving_is_positional_disjoint_and_sized(tmp_path):
    path = write_parquet(tmp_path / "data.parquet", 53)
    data = streaming.open_stream(path, val_fraction=0.1, test_fraction=0.2)
    train, val, test = indices(data.train), indices(data.val), indices(data.test)
    assert test == list(range(0, 53, 5))                      # every 5th example
    rest = [i for i in range(53) if i % 5]
    assert val == rest[::10]                                  # every 10th of the rest
    assert sorted(train + val + test) == list(range(53))      # disjoint and complete
    assert (len(data.train), len(data.val), len(data.test)) == (len(train), len(val), len(test))
    again = streaming.open_stream(path, val_fraction=0.1, test_fraction=0.2)
    assert indices(again.val) == val and indices(again.train) == train
    assert data.classes == ["a", "b", "c"] and data.image_shape == (1, 12, 12)
    assert any("every 5th" in note for note in data.notes)
    limited = streaming.open_stream(path, limit=7)
    assert indices(limited.train) == train[:7] and len(limited.train) == 7


def test_stats_come_from_a_bounded_sample_of_training_rows(tmp_path):
    path = write_parquet(tmp_path / "data.parquet", 40)
    data = streaming.open_stream(path, stats_sample=6)
    first = data.train.decode(list(data.train.rows())[:6])[0]
    assert data.stats_images == 6
    for got, want in zip((data.mean, data.std), _transforms.channel_stats(first)):
        np.testing.assert_array_equal(got, want)


def test_shuffle_is_seeded_reshuffles_each_epoch_and_covers_every_row(tmp_path):
    path = write_parquet(tmp_path / "data.parquet", 60)
    data = streaming.open_stream(path, val_fraction=0.0)
    order = lambda seed, epoch: [r["index"] for r in data.train.rows(seed=seed, epoch=epoch,
                                                                     shuffle_buffer=10)]
    first = order(0, 0)
    assert first == order(0, 0)
    assert sorted(first) == indices(data.train) and first != indices(data.train)
    assert order(0, 1) != first and sorted(order(0, 1)) == sorted(first)
    assert order(1, 0) != first


def test_hub_stream_with_shards_and_no_counts(monkeypatch):
    """A hub dataset as `datasets` streams it (several shards, no split sizes): rows are counted in
    one label pass (progress with no total), indices stay stable under shard shuffling."""
    feats = datasets.Features({"image": datasets.Image(),
                               "label": datasets.ClassLabel(names=["x", "y"])})
    rng = np.random.default_rng(0)

    def split(n):
        ds = datasets.Dataset.from_dict(
            {"image": [{"bytes": png(rng.integers(0, 256, (6, 6), dtype=np.uint8)), "path": None}
                       for _ in range(n)], "label": [i % 2 for i in range(n)]}, features=feats)
        return ds.to_iterable_dataset(num_shards=3)

    hub = datasets.IterableDatasetDict({"train": split(30), "test": split(9)})
    calls = []
    monkeypatch.setattr(streaming, "load_hub_dataset",
                        lambda name, spec, **kw: calls.append(kw["streaming"]) or hub)
    seen = []
    data = streaming.open_stream("mnist", val_fraction=0.2,
                                 progress=lambda *a: seen.append(a))
    assert calls == [True] and data.source == "hf:ylecun/mnist"
    assert (len(data.train), len(data.val), len(data.test)) == (24, 6, 9)
    assert any(total is None and "counting" in stage for stage, _, total in seen)
    shuffled = [r["index"] for r in data.train.rows(seed=0, epoch=0, shuffle_buffer=4)]
    assert sorted(shuffled) == indices(data.train)
    assert not set(shuffled) & set(indices(data.val))


# ----------------------------------------------------------------------------------- training

def test_streamed_run_matches_in_memory_run_in_the_same_order(tmp_path, monkeypatch):
    """Same rows in the same order (a folder with its own val/test, no shuffling, statistics of
    every training image): the same metrics and test report, augmentation included."""
    root = write_folder(tmp_path / "folder")
    common = dict(model="lenet5", dataset=str(root), epochs=2, batch_size=5, lr=0.05,
                  optimizer="sgd", momentum=0.9, schedule="cosine", crop_padding=2, flip=True,
                  seed=1)
    monkeypatch.setattr(train_mod, "EpochBatches", _InOrder)
    held = train_image(ImageConfig(run_dir=str(tmp_path / "held"), stream=False, **common))
    streamed = train_image(ImageConfig(run_dir=str(tmp_path / "stream"), stream=True,
                                       shuffle_buffer=0, **common))
    assert not held["streamed"] and streamed["streamed"]
    assert strip_timings(streamed["history"]) == strip_timings(held["history"])
    assert streamed["test"] == held["test"]
    cfg = json.loads((tmp_path / "stream" / "config.json").read_text())
    assert cfg["stream"] is True and cfg["stats_images"] == 24 and cfg["shuffle_buffer"] == 0
    assert cfg["split_sizes"] == {"train": 24, "val": 6, "test": 6}


def test_stream_batches_fast_forward_to_a_later_batch(tmp_path):
    path = write_parquet(tmp_path / "data.parquet", 50)
    data = streaming.open_stream(path, val_fraction=0.0)
    prepare = make_preparer(dict(input_size=(12, 12), channels=1, mean=data.mean, std=data.std,
                                 crop_padding=1, flip=True))
    make = lambda: streaming.StreamBatches(data.train, 8, seed=4, epoch=2, prepare=prepare,
                                           shuffle_buffer=12)
    sequential = make()
    batches = [sequential[i] for i in range(len(sequential))]
    assert len(sequential) == 5 and sum(len(y) for _, y in batches) == 40
    jumped = make()
    x, y = jumped[3]
    assert jumped.skipped == 24
    np.testing.assert_array_equal(x, batches[3][0])
    np.testing.assert_array_equal(y, batches[3][1])
    np.testing.assert_array_equal(jumped[1][0], batches[1][0])   # going back restarts the stream


def test_streamed_resume_is_exact(tmp_path):
    path = write_parquet(tmp_path / "data.parquet", 90, size=(28, 28))
    common = dict(model="lenet5", dataset=str(path), epochs=3, batch_size=16, lr=0.05,
                  schedule="cosine", stream=True, shuffle_buffer=20, seed=2)
    full = train_image(ImageConfig(run_dir=str(tmp_path / "full"), **common))
    flag = StopAfter(6)    # 58 training rows / 16 = 4 batches an epoch: stops inside epoch 2
    part = train_image(ImageConfig(run_dir=str(tmp_path / "part"), **common),
                       callbacks=loop.Callbacks(batch_end=flag.tick), stop_flag=flag)
    assert not part["finished"] and part["epochs_done"] == 1
    resumed = train_image(ImageConfig(run_dir=str(tmp_path / "part")), resume=True)
    assert resumed["finished"] and resumed["streamed"]
    assert strip_timings(resumed["history"]) == strip_timings(full["history"])
    assert resumed["test"] == full["test"]


def test_memory_stays_bounded_and_nothing_is_read_whole(tmp_path, monkeypatch):
    """The in-memory readers are never used, and an epoch's peak Python memory does not grow with
    the dataset: it is the shuffle buffer and a batch, far below the decoded split."""
    def whole(*a, **k):
        raise AssertionError("a streamed run read a split whole")
    for name in ("load_images", "_read_hf_split", "_read_tables"):
        monkeypatch.setattr(images, name, whole)
    peaks = {}
    for n in (200, 1000):
        path = write_parquet(tmp_path / f"d{n}.parquet", n, size=(32, 32, 3), seed=n)
        data = streaming.open_stream(path, val_fraction=0.0, stats_sample=16)
        prepare = make_preparer(dict(input_size=(32, 32), channels=3, mean=data.mean,
                                     std=data.std, crop_padding=0, flip=False))
        epoch = streaming.StreamBatches(data.train, 16, seed=0, epoch=0, prepare=prepare,
                                        shuffle_buffer=32)
        tracemalloc.start()
        seen = sum(len(epoch[i][1]) for i in range(len(epoch)))
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert seen == len(data.train)
    decoded = len(data.train) * 32 * 32 * 3
    assert peaks[1000] < decoded / 3, (peaks, decoded)
    assert peaks[1000] < 1.5 * peaks[200], peaks


def test_evaluate_a_streamed_run_and_progress_without_a_total(tmp_path):
    from rich.console import Console

    from cli._progress import ProgressPrinter
    from cli.main import main
    path = write_parquet(tmp_path / "data.parquet", 40, size=(28, 28))
    run = str(tmp_path / "run")
    result = CliRunner().invoke(main, ["train-image", "--dataset", str(path), "--stream",
                                       "--epochs", "1", "--batch-size", "16", "--shuffle-buffer",
                                       "8", "--run-dir", run])
    assert result.exit_code == 0, result.output
    assert "test: top-1 error" in result.output
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    result = CliRunner().invoke(main, ["evaluate", run])
    assert result.exit_code == 0, result.output
    assert f"top-1 error {report['top1_error']:.2%}" in result.output

    buf = io.StringIO()
    printer = ProgressPrinter(Console(file=buf, force_terminal=True, width=100))
    with printer:
        printer.data_progress("counting the rows of x", 4096, None)
        printer.progress.refresh()
        printer.epoch_start(0, 3)
        printer.batch_end(0, 0, 3, {"loss": 1.0, "acc": 0.5, "items_per_s": 10.0})
        printer.progress.refresh()
    out = buf.getvalue()
    assert "4096/?" in out and "counting the rows of x" in out and "1/3" in out


# ------------------------------------------------------------------------------------- errors

def test_auto_stream_above_the_memory_share(tmp_path, monkeypatch):
    path = write_parquet(tmp_path / "data.parquet", 10)
    cfg = ImageConfig(dataset=str(path))
    assert train_mod.decide_stream(cfg) == (False, None)
    monkeypatch.setattr(train_mod, "_memory_bytes", lambda: 1000)
    streamed, note = train_mod.decide_stream(cfg)
    assert streamed and "--no-stream" in note
    assert train_mod.decide_stream(ImageConfig(dataset=str(path), stream=False)) == (False, None)
    assert train_mod.decide_stream(ImageConfig(dataset="digits")) == (False, None)


def test_bad_input_is_one_line(tmp_path):
    from cli.main import main
    from test_data_images import make_idx_dir
    idx = tmp_path / "idx"
    make_idx_dir(idx)
    mixed = write_parquet(tmp_path / "mixed.parquet", 20, odd={13: (12, 10)})
    badlabel = tmp_path / "bad.parquet"
    rows = [{"image": {"bytes": png(np.zeros((6, 6), np.uint8)), "path": None}, "label": i}
            for i in range(6)]
    datasets.Dataset.from_list(rows, features=datasets.Features(
        {"image": datasets.Image(), "label": datasets.Value("int64")})).to_parquet(str(badlabel))
    runner = CliRunner()
    for k, (args, needle) in enumerate([
        (["--dataset", str(idx), "--stream"], "holds IDX files"),
        (["--dataset", "digits", "--stream"], "drop --stream"),
        (["--dataset", str(mixed), "--stream", "--epochs", "1"], "example 13 of"),
        (["--dataset", str(mixed), "--stream", "--shuffle-buffer", "-1"],
         "--shuffle-buffer must be >= 0"),
    ]):
        result = runner.invoke(main, ["train-image", "--run-dir", str(tmp_path / f"r{k}")] + args)
        assert result.exit_code != 0, args
        errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1 and needle in errors[0], (args, result.output)
        assert "Traceback" not in result.output
    with pytest.raises(ValueError, match=r"label 5 at example 5 of .* out of range for 4"):
        data = streaming.open_stream(badlabel, classes=["0", "1", "2", "3"], val_fraction=0.0,
                                     test_fraction=0.5)
        list(data.train.batches(8))


def test_save_to_disk_folder_with_string_labels(tmp_path):
    """A map-style dataset on disk (also what a cached hub download is) streams in slices; string
    labels are found in one pass over the label column and sorted into class names."""
    rng = np.random.default_rng(0)
    names = ["dog", "cat", "emu"]
    ds = datasets.Dataset.from_dict(
        {"image": [rng.integers(0, 256, (5, 5), dtype=np.uint8).tolist() for _ in range(30)],
         "label": [names[i % 3] for i in range(30)]})
    datasets.DatasetDict({"train": ds, "test": ds.select(range(6))}).save_to_disk(
        str(tmp_path / "saved"))
    data = streaming.open_stream(tmp_path / "saved", val_fraction=0.2)
    assert data.classes == ["cat", "dog", "emu"] and data.source.endswith("(datasets save_to_disk)")
    assert (len(data.train), len(data.val), len(data.test)) == (24, 6, 6)
    x, y = next(data.val.batches(4))
    assert x.shape == (4, 1, 5, 5) and x.dtype == np.uint8
    assert y.tolist() == [{"dog": 1, "cat": 0, "emu": 2}[names[i % 3]] for i in (0, 5, 10, 15)]
    np.testing.assert_array_equal(x[1, 0], np.asarray(ds[5]["image"], np.uint8))


def test_interpreting_a_streamed_run_reads_a_bounded_sample_of_its_training_stream(tmp_path,
                                                                                    monkeypatch):
    """neighbors searches a streamed run's training images without loading the split whole: the
    first ones, as many as fit in STREAM_SAMPLE_BYTES, in stream order, and it says so."""
    from cli.main import main
    from numconv import interpret
    from numconv.data import images as in_memory
    from numconv.interpret import runs
    path = write_parquet(tmp_path / "data.parquet", 40, size=(28, 28))
    run = str(tmp_path / "run")
    result = CliRunner().invoke(main, ["train-image", "--dataset", str(path), "--stream",
                                       "--epochs", "1", "--batch-size", "16", "--run-dir", run])
    assert result.exit_code == 0, result.output

    def whole(*a, **k):
        raise AssertionError("a streamed run's training split was loaded whole")
    monkeypatch.setattr(in_memory, "load_images", whole)
    full = interpret.open_run(run).training_split()
    assert full.x.shape[1:] == (1, 28, 28) and len(full.y) > 20
    monkeypatch.setattr(runs, "STREAM_SAMPLE_BYTES", 28 * 28 * 5)
    part = interpret.open_run(run)
    sample = part.training_split()
    assert len(sample.y) == 5 and "first 5 of" in part.note
    np.testing.assert_array_equal(sample.x, full.x[:5])
