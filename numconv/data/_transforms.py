"""Array transforms for image batches: fitting to the model's input size, augmentation, normalisation
and channel conversion. Pure NumPy, with Pillow used for bilinear resizing when it is installed.

Every function takes and returns arrays shaped (N, C, H, W). Random transforms draw from the
`numpy.random.Generator` they are given and nothing else, so the same seed gives the same batches.
"""
import numpy as np

# Fit by zero-padding (centred) when the model's input is larger than the images by at most this
# factor on each side, as LeNet-5 pads 28x28 MNIST to 32x32; resize for larger differences.
PAD_MAX_RATIO = 1.25
# A channel whose standard deviation is below this is treated as constant (normalised by 1).
STD_FLOOR = 1e-6


def pillow():
    """The PIL.Image module, or None when Pillow is not installed (tests patch this)."""
    try:
        from PIL import Image
    except ImportError:
        return None
    return Image


def to_unit_float(x):
    """uint8 images (N, C, H, W) -> float32 in 0..1; float images -> float32 copy, values kept."""
    if x.dtype == np.uint8:
        return x.astype(np.float32) * np.float32(1.0 / 255.0)
    return np.array(x, dtype=np.float32, copy=True)


def fit_method(src_size, dst_size):
    """How images of `src_size` (H, W) are fitted to `dst_size`: 'none', 'pad' or 'resize'."""
    (h, w), (H, W) = src_size, dst_size
    if (h, w) == (H, W):
        return "none"
    if H >= h and W >= w and H <= h * PAD_MAX_RATIO and W <= w * PAD_MAX_RATIO:
        return "pad"
    return "resize"


def pad_to(x, size):
    """Zero-pad (N, C, h, w) to (N, C, H, W), the image centred (odd margins: one more below/right)."""
    H, W = size
    n, c, h, w = x.shape
    top, left = (H - h) // 2, (W - w) // 2
    out = np.zeros((n, c, H, W), dtype=x.dtype)
    out[:, :, top:top + h, left:left + w] = x
    return out


def resize(x, size):
    """Resize (N, C, h, w) to (N, C, H, W): bilinear with Pillow, nearest neighbour without it.

    Works on uint8 (kept uint8) and float32 (kept float32) arrays."""
    H, W = size
    n, c, h, w = x.shape
    if (h, w) == (H, W):
        return x
    Image = pillow()
    if Image is None:
        rows = np.minimum(((np.arange(H) + 0.5) * (h / H)).astype(np.intp), h - 1)
        cols = np.minimum(((np.arange(W) + 0.5) * (w / W)).astype(np.intp), w - 1)
        return np.ascontiguousarray(x[:, :, rows][:, :, :, cols])
    out = np.empty((n, c, H, W), dtype=x.dtype)
    plane = x if x.dtype == np.uint8 else x.astype(np.float32, copy=False)
    for i in range(n):
        for j in range(c):
            img = Image.fromarray(np.ascontiguousarray(plane[i, j]))
            out[i, j] = np.asarray(img.resize((W, H), Image.BILINEAR))
    return out


def resize_cover(x, size):
    """Scale (N, C, h, w) so that it covers `size` (aspect ratio kept), then centre-crop to (H, W)."""
    H, W = size
    n, c, h, w = x.shape
    if (h, w) == (H, W):
        return x
    scale = max(H / h, W / w)
    sh, sw = max(H, round(h * scale)), max(W, round(w * scale))
    x = resize(x, (sh, sw))
    top, left = (sh - H) // 2, (sw - W) // 2
    return np.ascontiguousarray(x[:, :, top:top + H, left:left + W])


def fit_to_size(x, size):
    """Fit (N, C, h, w) to the model's input (H, W): centred zero-padding for small growth, resizing
    otherwise (see PAD_MAX_RATIO)."""
    method = fit_method(x.shape[2:], tuple(size))
    if method == "pad":
        return pad_to(x, size)
    if method == "resize":
        return resize(x, size)
    return x


def random_crop(x, padding, rng):
    """Zero-pad each side by `padding`, then crop every image back to its size at an offset drawn
    from `rng` (one (dy, dx) pair per image, drawn in one call)."""
    n, c, h, w = x.shape
    offsets = rng.integers(0, 2 * padding + 1, size=(n, 2))
    padded = np.zeros((n, c, h + 2 * padding, w + 2 * padding), dtype=x.dtype)
    padded[:, :, padding:padding + h, padding:padding + w] = x
    out = np.empty_like(x)
    for i, (dy, dx) in enumerate(offsets):
        out[i] = padded[i, :, dy:dy + h, dx:dx + w]
    return out


def random_flip(x, rng):
    """Mirror each image left-right with probability 1/2 (one draw per image)."""
    flip = rng.random(x.shape[0]) < 0.5
    out = x.copy()
    out[flip] = x[flip, :, :, ::-1]
    return out


def normalise(x, mean, std):
    """(x - mean) / std per channel, in place on float32 (N, C, H, W); mean, std (C,) or (1,)."""
    mean = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
    x -= mean
    x /= np.where(std < STD_FLOOR, np.float32(1.0), std)
    return x


def convert_channels(x, channels):
    """1 -> C channels by repetition; C -> 1 by averaging; otherwise the counts must match."""
    c = x.shape[1]
    if channels is None or channels == c:
        return x
    if c == 1:
        return np.repeat(x, channels, axis=1)
    if channels == 1:
        return x.mean(axis=1, keepdims=True, dtype=np.float32)
    raise ValueError(f"cannot convert {c}-channel images to {channels} channels: "
                     f"only 1 <-> N conversions are defined; use a model with {c} input channels")


def channel_stats(x, chunk=4096):
    """Per-channel mean and standard deviation of (N, C, H, W) images in 0..1 units (uint8 / 255;
    float images as they are), accumulated in float64 over chunks of images. Returns two (C,)
    float32 arrays."""
    acc = ChannelStats()
    for start in range(0, x.shape[0], chunk):
        acc.add(x[start:start + chunk])
    return acc.result()


class ChannelStats:
    """`channel_stats` fed one block of images at a time (e.g. from a stream). Blocks of the same
    images in the same order give bit-identical results to `channel_stats` with that chunk size."""

    def __init__(self):
        self.total = self.total_sq = None
        self.count = 0   # pixels per channel so far
        self.images = 0

    def add(self, block):
        """block: (n, C, H, W) images of one dtype (uint8 or float)."""
        if self.total is None:
            self.total = np.zeros(block.shape[1])
            self.total_sq = np.zeros(block.shape[1])
        scale = 1.0 / 255.0 if block.dtype == np.uint8 else 1.0
        values = block.astype(np.float64) * scale
        self.total += values.sum(axis=(0, 2, 3))
        self.total_sq += np.square(values).sum(axis=(0, 2, 3))
        self.count += block.shape[0] * block.shape[2] * block.shape[3]
        self.images += block.shape[0]

    def result(self):
        """-> (mean, std), two (C,) float32 arrays; channels with no spread get std 1."""
        mean = self.total / self.count
        std = np.sqrt(np.maximum(self.total_sq / self.count - np.square(mean), 0.0))
        std = np.where(std < STD_FLOOR, 1.0, std)
        return mean.astype(np.float32), std.astype(np.float32)
