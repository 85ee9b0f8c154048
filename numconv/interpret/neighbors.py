"""Nearest neighbours in feature space (the AlexNet paper's figure 4, right): for each query image,
the training images whose activations at a layer are closest in Euclidean distance.

The training set's features are computed once per (checkpoint, data, layer) and cached in the run
directory under features/, keyed by a SHA-256 of the checkpoint file's bytes, the training images
and labels, the input preparation and the layer: retraining, resuming or changing the data changes
the key, and a stale cache file is never read."""
import hashlib
import json
import os
from dataclasses import dataclass

import numpy as np

from numconv.interpret.layers import default_feature_layer, forward_to, get_layer

CACHE_DIR = "features"
CACHE_VERSION = 1
BATCH = 256


def _sha(*arrays_or_bytes):
    h = hashlib.sha256()
    for item in arrays_or_bytes:
        if isinstance(item, np.ndarray):
            h.update(str((item.dtype.str, item.shape)).encode())
            h.update(np.ascontiguousarray(item).tobytes())
        else:
            h.update(item if isinstance(item, bytes) else str(item).encode())
    return h.hexdigest()


def file_sha(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cache_key(checkpoint_file, split, layer, input_shape, mean, std):
    """The key of a feature cache: changes with the weights, the images, the labels, the input
    preparation or the layer."""
    meta = json.dumps({"v": CACHE_VERSION, "layer": layer, "input_shape": list(input_shape),
                       "mean": [float(v) for v in np.ravel(mean)],
                       "std": [float(v) for v in np.ravel(std)]}, sort_keys=True)
    return _sha(file_sha(checkpoint_file), split.x, split.y, meta)


def features_of(model, layer, inputs_fn, count, batch_size=BATCH):
    """(count, D) float32 flattened activations at `layer`; inputs_fn(idx) -> model inputs."""
    out = None
    for start in range(0, count, batch_size):
        idx = np.arange(start, min(count, start + batch_size))
        a = forward_to(model, inputs_fn(idx), layer)
        a = a.reshape(len(idx), -1)
        if out is None:
            out = np.empty((count, a.shape[1]), np.float32)
        out[idx] = a
    return out


@dataclass
class FeatureBank:
    layer: str
    features: np.ndarray    # (N, D) training features
    key: str
    path: str               # the cache file
    cached: bool            # read from the cache (True) or computed now (False)


def training_features(run, layer=None, batch_size=BATCH, use_cache=True):
    """The run's training images' features at `layer` (default: the last hidden layer), read from
    the cache when its key matches, else computed and cached (atomically)."""
    from numconv.train.checkpoint import atomic_write_bytes
    model = run.model
    layer = get_layer(model, layer or default_feature_layer(model)).name
    split = run.training_split()
    key = cache_key(run.checkpoint, split, layer, run.input_shape, run.mean, run.std)
    folder = os.path.join(run.run_dir, CACHE_DIR)
    path = os.path.join(folder, f"{layer}-{key[:16]}.npz")
    if use_cache and os.path.exists(path):
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["key"]) == key:
                    return FeatureBank(layer, z["features"], key, path, True)
        except Exception:   # an unreadable cache is recomputed, never trusted
            pass
    feats = features_of(model, layer, lambda idx: run.prepare(split.x[idx]), len(split.y),
                        batch_size)
    if use_cache:
        import io
        os.makedirs(folder, exist_ok=True)
        buf = io.BytesIO()
        np.savez(buf, features=feats, key=np.array(key))
        atomic_write_bytes(path, buf.getvalue())
        for old in os.listdir(folder):   # caches of this layer for other weights or data
            if old.startswith(f"{layer}-") and old.endswith(".npz") and \
                    os.path.join(folder, old) != path:
                os.unlink(os.path.join(folder, old))
    return FeatureBank(layer, feats, key, path, False)


def nearest(bank, queries, k):
    """(indices (Q, k), distances (Q, k)): the k rows of bank (N, D) closest to each query (Q, D)
    in Euclidean distance, nearest first (ties: lower index first). Distances are computed from the
    differences in float64, so an identical row is at distance exactly 0."""
    bank = np.asarray(bank)
    queries = np.asarray(queries).reshape(len(queries), -1)
    if queries.shape[1] != bank.shape[1]:
        raise ValueError(f"query features have {queries.shape[1]} values, the bank {bank.shape[1]}")
    k = int(k)
    if not 1 <= k <= len(bank):
        raise ValueError(f"k={k} must be between 1 and the number of training images ({len(bank)})")
    idx = np.empty((len(queries), k), np.int64)
    dist = np.empty((len(queries), k))
    rows = max(1, (1 << 24) // max(1, bank.shape[1]))    # bound the temporary to ~128 MB
    for q, v in enumerate(queries.astype(np.float64)):
        d = np.empty(len(bank))
        for s in range(0, len(bank), rows):
            diff = bank[s:s + rows].astype(np.float64) - v
            d[s:s + rows] = np.sqrt(np.einsum("ij,ij->i", diff, diff))
        order = np.argsort(d, kind="stable")[:k]
        idx[q], dist[q] = order, d[order]
    return idx, dist


@dataclass
class NeighborResult:
    layer: str
    indices: np.ndarray     # (Q, k) training-image indices
    distances: np.ndarray   # (Q, k)
    bank: FeatureBank


def neighbors(run, query_inputs, layer=None, k=6, use_cache=True):
    """Nearest training images for each prepared query (Q, C, H, W)."""
    bank = training_features(run, layer, use_cache=use_cache)
    q = features_of(run.model, bank.layer, lambda idx: query_inputs[idx], len(query_inputs))
    idx, dist = nearest(bank.features, q, k)
    return NeighborResult(bank.layer, idx, dist, bank)
