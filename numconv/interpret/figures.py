"""The pictures each command writes, from the results of the computations in this package."""
import math
import os

import numpy as np

from numconv.interpret._render import new_figure, save_figure, save_png, show, stored_display, \
    to_display


def output_path(run_dir, out, file_name):
    """`out` when given (a folder: the file goes inside it), else the file in the run directory."""
    if out is None:
        return os.path.join(str(run_dir), file_name)
    out = str(out)
    if os.path.isdir(out) or out.endswith(os.sep):
        return os.path.join(out, file_name)
    return out


def write_filter_grid(grid, path):
    """The FilterGrid's pixels, exactly, as a PNG."""
    return save_png(grid.image, path, "numconv visualize filters")


def maximize_figure(result, mean, std, path, classes=None, logits=False):
    """One tile per channel: the optimised image, titled with the channel (or class) and the
    objective before -> after."""
    K = len(result.channels)
    cols = min(K, 6)
    rows = math.ceil(K / cols)
    fig = new_figure(2.0 * cols, 2.3 * rows + 0.3, "numconv visualize maximize")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for i, (k, ax) in enumerate(zip(result.channels, axes)):
        name = f"class {classes[k]}" if logits and classes else f"channel {k}"
        show(ax, to_display(result.images[i], mean, std),
             f"{name}\n{result.start_activation[i]:.3g} -> {result.final_activation[i]:.3g}")
    for ax in axes[K:]:
        ax.axis("off")
    fig.suptitle(f"activation maximisation: {result.layer}", fontsize=10)
    return save_figure(fig, path)


def neighbors_figure(queries, result, gallery, labels, classes, path):
    """One row per query: the query, then its k nearest training images with label and distance."""
    Q, k = result.indices.shape
    fig = new_figure(1.6 * (k + 1), 1.8 * Q + 0.4, "numconv neighbors")
    axes = fig.subplots(Q, k + 1, squeeze=False)
    for q in range(Q):
        show(axes[q, 0], stored_display(queries[q]), "query")
        axes[q, 0].patch.set_edgecolor("red")
        for j in range(k):
            i = int(result.indices[q, j])
            show(axes[q, j + 1], stored_display(gallery[i]),
                 f"#{i} {classes[int(labels[i])]}\nd={result.distances[q, j]:.3g}")
    fig.suptitle(f"nearest training images at {result.layer}", fontsize=10)
    return save_figure(fig, path)


def shift_figure(report, layer, mean, std, path, channels=6):
    """Top row: the image and the first channels of `layer`'s maps; second row: the shifted image
    and its maps; then the measured errors."""
    a, b = report.maps[layer]
    n = min(channels, a.shape[0]) if a.ndim == 3 else 0
    fig = new_figure(max(7.5, 1.7 * (n + 1) + 0.2), 4.2, "numconv visualize shift")
    grid = fig.add_gridspec(3, n + 1, height_ratios=[1, 1, 0.45])
    for row, (img, maps, tag) in enumerate(((report.inputs[0], a, "image"),
                                            (report.inputs[1], b,
                                             f"shifted ({report.dy}, {report.dx})"))):
        show(fig.add_subplot(grid[row, 0]), to_display(img, mean, std), tag)
        for c in range(n):
            ax = fig.add_subplot(grid[row, c + 1])
            lo, hi = float(min(a[c].min(), b[c].min())), float(max(a[c].max(), b[c].max()))
            ax.imshow(maps[c], cmap="viridis", vmin=lo, vmax=hi if hi > lo else lo + 1,
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(f"{layer}[{c}]", fontsize=8)
    text = fig.add_subplot(grid[2, :])
    text.axis("off")
    lines = ["equivariance error (interior): " + "   ".join(
        f"{r.name} {_fmt(r.error)}{'' if r.exact else '*'}" for r in report.layers),
        f"invariance error after {report.pooled}: {_fmt(report.invariance)}",
        "* the shift is not a multiple of the layer's stride: compared at the rounded shift"]
    text.text(0.0, 1.0, "\n".join(lines), va="top", ha="left", fontsize=8, family="monospace",
              wrap=True)
    return save_figure(fig, path)


def _fmt(v):
    return "n/a" if v != v else f"{v:.2e}"
