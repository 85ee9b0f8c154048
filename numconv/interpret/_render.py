"""Writing pictures: pixel-exact PNGs through Pillow, figures with text through matplotlib's
object API (no pyplot, so no global state and no display needed). Every file is written to a
temporary file beside the target and renamed over it."""
import io
import os

import numpy as np

from numconv.train.checkpoint import atomic_write_bytes

INSTALL_HINT = "pip install 'numconv[viz]' (or: pip install matplotlib pillow)"


class VizUnavailable(RuntimeError):
    """The optional plotting libraries are not installed."""


def require_matplotlib(what="this command"):
    """matplotlib.figure.Figure, or VizUnavailable with the pip command."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise VizUnavailable(f"{what} draws with matplotlib, which is not installed: "
                             f"{INSTALL_HINT}") from None
    return Figure


def require_pillow(what="this command"):
    try:
        from PIL import Image
    except ImportError:
        raise VizUnavailable(f"{what} writes PNG files with Pillow, which is not installed: "
                             f"{INSTALL_HINT}") from None
    return Image


def new_figure(width, height, what="this command"):
    Figure = require_matplotlib(what)
    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def save_figure(fig, path):
    """Render `fig` to PNG and write it atomically to `path`; returns the path."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    _write(path, buf.getvalue())
    return path


def save_png(pixels, path, what="this command"):
    """uint8 (H, W) greyscale or (H, W, 3) RGB pixels -> a PNG at `path`, pixel for pixel."""
    Image = require_pillow(what)
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, mode=None).save(buf, format="PNG")
    _write(path, buf.getvalue())
    return path


def _write(path, data):
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    atomic_write_bytes(path, data)


def to_display(x, mean, std):
    """One normalised model input (C, H, W) -> pixels in 0..1 for imshow: (H, W) for one channel,
    (H, W, 3) for three."""
    mean = np.asarray(mean, np.float32).reshape(-1, 1, 1)
    std = np.asarray(std, np.float32).reshape(-1, 1, 1)
    img = np.clip(x * std + mean, 0.0, 1.0)
    return img[0] if img.shape[0] == 1 else np.transpose(img[:3], (1, 2, 0))


def stored_display(x):
    """One stored image (C, H, W) uint8 or float -> pixels in 0..1 for imshow."""
    img = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else np.clip(x, 0.0, 1.0)
    return img[0] if img.shape[0] == 1 else np.transpose(img[:3], (1, 2, 0))


def show(ax, img, title=None, fontsize=8):
    """imshow with no ticks; greyscale for 2-D images."""
    if img.ndim == 2:
        ax.imshow(img, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(img, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=fontsize)
