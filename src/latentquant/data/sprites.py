"""``sprites``: a dSprites-like binary dataset rendered here.

Same factor structure as dSprites (Matthey et al. 2017,
https://github.com/deepmind/dsprites-dataset), pixels of our own:

    shape        3   square, ellipse, heart
    scale        6   linspace(0.5, 1, 6)
    orientation 40   linspace(0, 2 pi, 40) radians (0 and 2 pi coincide, as in dSprites)
    posX        32   linspace(0, 1, 32)
    posY        32   linspace(0, 1, 32)

737,280 binary 64 x 64 images, row-major (posY fastest). A sprite's centre
sits at pixel coordinate ``16 + 31 * pos`` (x to the right, y downward), so
the 32 positions are whole-pixel steps spanning the middle half of the frame
and a position change is an exact translation.

Rendering: the 3 * 6 * 40 = 720 centred 32 x 32 sprite masks are rasterized
once (pixel-centre sampling of the analytic shape, no anti-aliasing: images
stay in {0, 1}); an image is its mask pasted at the position offset. The
masks take 0.7 MB, so a batch is a gather plus one slice copy per image.
"""

from __future__ import annotations

import numpy as np

from latentquant._images import IMAGE_SIZE
from latentquant.data.base import FactorDataset
from latentquant.data.registry import register

SHAPES = ("square", "ellipse", "heart")
SCALES = np.linspace(0.5, 1.0, 6)
ORIENTATIONS = np.linspace(0.0, 2 * np.pi, 40)
POSITIONS = np.linspace(0.0, 1.0, 32)
PATCH = 32  # sprite masks are PATCH x PATCH, centred on a pixel corner

# Sizes in pixels at scale 1 (every rotated shape fits within 15.5 px of its centre).
SQUARE_HALF_SIDE = 10.0
ELLIPSE_SEMI_AXES = (14.5, 7.0)
HEART_UNIT = 10.5


def _heart_inside(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Inside of the heart curve (x^2 + y^2 - 1)^3 - x^2 y^3 <= 0 (lobes up, tip at y = -1).

    The curve spans x in [-1.14, 1.14], y in [-1, 1.24]; shifting y by 0.12
    centres it vertically.
    """
    y = y + 0.12
    r = x * x + y * y - 1.0
    return r * r * r - x * x * y * y * y <= 0.0


def render_masks() -> np.ndarray:
    """All sprite masks, bool ``(3, 6, 40, 32, 32)`` indexed (shape, scale, orientation, row, col)."""
    offsets = np.arange(PATCH) + 0.5 - PATCH / 2  # pixel centres relative to the sprite centre
    dy, dx = np.meshgrid(offsets, offsets, indexing="ij")  # (32, 32), dy grows downward
    u, v = dx.ravel(), -dy.ravel()  # y-up frame, (P,)
    c, s = np.cos(ORIENTATIONS)[:, None], np.sin(ORIENTATIONS)[:, None]
    # rotate the pixel grid by -theta: the shape turns counter-clockwise by theta
    ur, vr = c * u + s * v, -s * u + c * v  # (40, P)
    scale = SCALES[:, None, None]  # (6, 1, 1)
    square = np.maximum(np.abs(ur), np.abs(vr)) <= SQUARE_HALF_SIDE * scale
    a, b = ELLIPSE_SEMI_AXES
    ellipse = (ur / (a * scale)) ** 2 + (vr / (b * scale)) ** 2 <= 1.0
    heart = _heart_inside(ur / (HEART_UNIT * scale), vr / (HEART_UNIT * scale))
    masks = np.stack([square, ellipse, heart])  # (3, 6, 40, P)
    return masks.reshape(len(SHAPES), len(SCALES), len(ORIENTATIONS), PATCH, PATCH)


@register("sprites")
class Sprites(FactorDataset):
    """dSprites-like binary sprites rendered on the fly (see module docstring).

    >>> ds = Sprites(); image, factors = ds[0]; image.shape, factors.tolist()
    (torch.Size([1, 64, 64]), [0, 0, 0, 0, 0])
    """

    name = "sprites"
    factor_names = ("shape", "scale", "orientation", "posX", "posY")
    factor_sizes = (3, 6, 40, 32, 32)
    num_channels = 1
    factor_values = {
        "shape": SHAPES,
        "scale": SCALES,
        "orientation": ORIENTATIONS,
        "posX": POSITIONS,
        "posY": POSITIONS,
    }

    _masks: np.ndarray | None = None  # shared by all instances in a process

    def __init__(self, root=None, path=None):
        if path is not None:
            raise ValueError(
                f"'sprites' is rendered here and takes no path (got {path!r}); use 'dsprites' to read the public file"
            )

    @classmethod
    def masks(cls) -> np.ndarray:
        if Sprites._masks is None:
            Sprites._masks = render_masks()
        return Sprites._masks

    def _images(self, idx: np.ndarray) -> np.ndarray:
        shape, scale, orient, px, py = np.unravel_index(idx, self.factor_sizes)
        patches = self.masks()[shape, scale, orient]  # (n, 32, 32) bool
        out = np.zeros((len(idx), 1, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
        # one slice copy per image beats a fancy-index scatter about 5x
        for b, (y, x) in enumerate(zip(py.tolist(), px.tolist())):
            out[b, 0, y : y + PATCH, x : x + PATCH] = patches[b]  # top-left corner = (posY, posX) index
        return out
