"""``shapes``: a Shapes3D-like colour dataset rendered here.

Same factor structure as 3dshapes (Burgess & Kim 2018,
https://github.com/deepmind/3d-shapes), pixels of our own:

    floor_hue    10   linspace(0, 0.9, 10)
    wall_hue     10   linspace(0, 0.9, 10)
    object_hue   10   linspace(0, 0.9, 10)
    scale         8   linspace(0.75, 1.25, 8)
    shape         4   cube, cylinder, sphere, capsule
    orientation  15   camera azimuth linspace(-30, 30, 15) degrees

480,000 RGB 64 x 64 images, row-major (orientation fastest). An object stands
on a floor in front of a wall; orientation orbits the camera about the
vertical axis through the object, so the object turns *and* the wall/floor
boundary tilts (a sphere or upright cylinder changes through the background
and its shading).

Rendering (not photoreal): a small analytic ray caster in numpy. Rays from a
pinhole camera (2 x 2 samples per pixel) hit the object (ray/box, ray/sphere,
ray/cylinder and ray/capsule intersections), the floor plane or the wall
plane; the object is Lambert + Blinn-Phong shaded under one directional
light, and floor/wall points cast a shadow ray toward the light. Colour
enters linearly, so for each (shape, scale, orientation) the renderer keeps
four weight maps (floor, wall, object, white highlight) and an image is

    image[c, p] = sum_m  weight[m, p] * colour[m, c],    colour = hsv(hue, 1, 1)

The 480 map sets (31 MB float32) are rendered lazily, one (shape, scale)
group of 15 orientations at a time (0.1 to 0.2 s each), then a batch costs a
gather and a (3 x 4) @ (4 x 4096) product per image.
"""

from __future__ import annotations

import colorsys
import functools
import threading

import numpy as np

from latentquant._images import IMAGE_SIZE
from latentquant.data.base import FactorDataset
from latentquant.data.registry import register

HUES = np.linspace(0.0, 0.9, 10)
SCALES = np.linspace(0.75, 1.25, 8)
SHAPES = ("cube", "cylinder", "sphere", "capsule")
AZIMUTHS = np.linspace(-30.0, 30.0, 15)  # degrees

# Scene (world frame: x right, y up, z away from the camera at azimuth 0).
RES, SS = IMAGE_SIZE, 2  # image size, samples per pixel along each axis
CAM_DIST, CAM_HEIGHT, TARGET_Y = 3.6, 1.8, 0.55
FOV = np.deg2rad(40.0)
WALL_Z = 2.0  # the wall is the plane z = WALL_Z
LIGHT = np.array([-0.55, 1.0, -0.65]) / np.linalg.norm([-0.55, 1.0, -0.65])  # toward the light
AMBIENT, DIFFUSE, SPECULAR, SHININESS = 0.30, 0.70, 0.35, 24.0
FLOOR_LIGHT, WALL_LIGHT, SHADOW = 0.92, 0.68, 0.45
EPS = 1e-6


def _dot(a, b):
    return np.einsum("...i,...i->...", a, b)


def camera_rays(azimuth_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ray origins ``(A, 1, 3)`` and unit directions ``(A, P, 3)``, P = (64 SS)^2, row-major from the top-left."""
    az = np.deg2rad(np.asarray(azimuth_deg, dtype=np.float64))
    origin = np.stack([-CAM_DIST * np.sin(az), np.full_like(az, CAM_HEIGHT), -CAM_DIST * np.cos(az)], -1)
    forward = np.array([0.0, TARGET_Y, 0.0]) - origin
    forward /= np.linalg.norm(forward, axis=-1, keepdims=True)
    right = np.cross(np.array([0.0, 1.0, 0.0]), forward)
    right /= np.linalg.norm(right, axis=-1, keepdims=True)
    up = np.cross(forward, right)
    n = RES * SS
    s = ((np.arange(n) + 0.5) / n * 2.0 - 1.0) * np.tan(FOV / 2)
    sy, sx = np.meshgrid(-s, s, indexing="ij")  # screen y grows upward
    d = (
        forward[:, None, :] + sx.reshape(1, -1, 1) * right[:, None, :] + sy.reshape(1, -1, 1) * up[:, None, :]
    )  # (A, P, 3)
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    return origin[:, None, :], d


# ---------------------------------------------------------------- primitives
# Each returns (t, normal): hit distance (inf on a miss) (...,) and unit normal (..., 3).
def _sphere(o, d, centre, radius):
    """Sphere; ``centre`` (..., 3) and ``radius`` (...) broadcast against the rays."""
    oc = o - centre
    b = _dot(oc, d)
    c = _dot(oc, oc) - radius**2
    disc = b * b - c
    t = -b - np.sqrt(np.maximum(disc, 0.0))
    t = np.where((disc >= 0) & (t > EPS), t, np.inf)
    p = o + np.where(np.isfinite(t), t, 0.0)[..., None] * d
    return t, (p - centre) / np.asarray(radius)[..., None]


def _box(o, d, h):
    """Cube [-h, h] x [0, 2 h] x [-h, h] standing on the floor; ``h`` (...) broadcasts."""
    lo = np.stack([-h, np.zeros_like(h), -h], -1)
    hi = np.stack([h, 2 * h, h], -1)
    d = np.where(np.abs(d) < 1e-12, 1e-12, d)
    t1, t2 = (lo - o) / d, (hi - o) / d
    tmin, tmax = np.minimum(t1, t2), np.maximum(t1, t2)
    near, far = tmin.max(-1), tmax.min(-1)
    t = np.where((near <= far) & (near > EPS), near, np.inf)
    axis = tmin.argmax(-1)
    normal = np.zeros(d.shape)
    np.put_along_axis(normal, axis[..., None], -np.sign(np.take_along_axis(d, axis[..., None], -1)), -1)
    return t, normal


def _tube(o, d, radius, axis, lo, hi, centre_off):
    """Open cylinder around ``axis`` (0=x, 1=y) through (0, centre_off, 0) (for axis x) or the y axis,
    clipped to [lo, hi] along it."""
    a, b = [i for i in range(3) if i != axis]
    oa, ob = o[..., a], o[..., b]
    if axis == 0:  # the x-axis tube is lifted to height centre_off
        oa = oa - centre_off
    da, db = d[..., a], d[..., b]
    A = da * da + db * db
    B = oa * da + ob * db
    C = oa * oa + ob * ob - radius**2
    disc = B * B - A * C
    t = (-B - np.sqrt(np.maximum(disc, 0.0))) / np.maximum(A, 1e-12)
    along = o[..., axis] + t * d[..., axis]
    t = np.where((disc >= 0) & (t > EPS) & (along >= lo) & (along <= hi), t, np.inf)
    tt = np.where(np.isfinite(t), t, 0.0)
    normal = np.zeros(d.shape)
    normal[..., a] = (oa + tt * da) / radius
    normal[..., b] = (ob + tt * db) / radius
    return t, normal


def _disc_cap(o, d, height, radius):
    """Horizontal disc y = height, x^2 + z^2 <= radius^2, facing up."""
    t = (height - o[..., 1]) / np.where(np.abs(d[..., 1]) < 1e-12, -1e-12, d[..., 1])
    p = o + np.where(t > 0, t, 0.0)[..., None] * d
    inside = p[..., 0] ** 2 + p[..., 2] ** 2 <= radius**2
    t = np.where((t > EPS) & inside, t, np.inf)
    normal = np.zeros(d.shape)
    normal[..., 1] = 1.0
    return t, normal


def _closest(*hits):
    ts = np.stack([h[0] for h in hits])
    k = ts.argmin(0)
    normals = np.stack([h[1] for h in hits])
    return np.take_along_axis(ts, k[None], 0)[0], np.take_along_axis(normals, k[None, ..., None], 0)[0]


def _object_hits(shape: int, s: float, o: np.ndarray, d: np.ndarray):
    """Exact hit of the object ``shape`` at scale ``s`` for rays o, d (M, 3)."""
    if shape == 0:
        return _box(o, d, s / 2)
    if shape == 1:
        r = s / 2
        return _closest(_tube(o, d, r, 1, 0.0, s, 0.0), _disc_cap(o, d, s, r))
    if shape == 2:
        r = s / 2
        centre = np.stack([np.zeros_like(r), r, np.zeros_like(r)], -1)
        return _sphere(o, d, centre, r)
    if shape == 3:
        r, half = 0.3 * s, 0.75 * s - 0.3 * s
        zero = np.zeros_like(r)
        left, right = np.stack([-half, r, zero], -1), np.stack([half, r, zero], -1)
        return _closest(_tube(o, d, r, 0, -half, half, r), _sphere(o, d, left, r), _sphere(o, d, right, r))
    raise ValueError(f"shape index must be 0..{len(SHAPES) - 1}, got {shape}")


def intersect_object(shape: int, scale: float, o, d):
    """Hit distance ``(...)`` (inf on a miss) and unit normal ``(..., 3)`` of object ``shape``.

    ``o`` and ``d`` broadcast to a common ray batch. Object sizes in world
    units, with s = scale: cube side s; upright cylinder radius s/2 and
    height s; sphere diameter s; capsule lying along x, radius 0.3 s and
    length 1.5 s. Only rays through the bounding sphere (centre (0, s/2, 0),
    radius 0.95 s) are intersected exactly.
    """
    s = float(scale)
    batch = np.broadcast_shapes(np.shape(o), np.shape(d))
    oc = o - np.array([0.0, s / 2, 0.0])
    b = _dot(oc, d)
    disc = b * b - (_dot(oc, oc) - (0.95 * s) ** 2)
    cand = np.nonzero((disc >= 0) & (np.sqrt(np.maximum(disc, 0.0)) > b))  # far root -b + sqrt(disc) > 0
    t = np.full(batch[:-1], np.inf)
    normal = np.zeros(batch)
    if len(cand[0]):
        t[cand], normal[cand] = _object_hits(shape, s, np.broadcast_to(o, batch)[cand], np.broadcast_to(d, batch)[cand])
    return t, normal


@functools.lru_cache(maxsize=4)
def _cached_rays(azimuths: tuple[float, ...]):
    o, d = camera_rays(np.array(azimuths))
    o.flags.writeable = d.flags.writeable = False
    return o, d


def render_maps(shape: int, scale: float, azimuths=AZIMUTHS) -> np.ndarray:
    """Weight maps float32 ``(A, 4, 64, 64)`` (floor, wall, object, white) for one shape and scale."""
    o, d = _cached_rays(tuple(float(a) for a in azimuths))  # (A, 1, 3), (A, P, 3)
    t_obj, normal = intersect_object(shape, scale, o, d)  # (A, P)
    t_floor = np.where(d[..., 1] < 0, -o[..., 1] / np.minimum(d[..., 1], -1e-12), np.inf)
    t_wall = np.where(d[..., 2] > 0, (WALL_Z - o[..., 2]) / np.maximum(d[..., 2], 1e-12), np.inf)
    floor_first = t_floor < t_wall
    t_bg = np.minimum(t_floor, t_wall)
    obj = t_obj < t_bg

    # shadows: does a ray from the floor/wall point toward the light hit the object?
    p = o + np.where(np.isfinite(t_bg), t_bg, 0.0)[..., None] * d
    t_sh, _ = intersect_object(shape, scale, p + 1e-4 * LIGHT, LIGHT)
    lit = 1.0 - SHADOW * np.isfinite(t_sh)

    lambert = np.clip(_dot(normal, LIGHT), 0.0, None)
    half = LIGHT - d
    half /= np.linalg.norm(half, axis=-1, keepdims=True)
    spec = SPECULAR * np.clip(_dot(normal, half), 0.0, None) ** SHININESS * (lambert > 0)
    w = np.stack(
        [
            np.where(~obj & floor_first, FLOOR_LIGHT * lit, 0.0),
            np.where(~obj & ~floor_first, WALL_LIGHT * lit, 0.0),
            np.where(obj, AMBIENT + DIFFUSE * lambert, 0.0),
            np.where(obj, spec, 0.0),
        ],
        1,
    )  # (A, 4, P)
    w = w.reshape(len(azimuths), 4, RES, SS, RES, SS).sum(5).sum(3) / SS**2
    return w.astype(np.float32)


def hue_colours(hues=HUES) -> np.ndarray:
    """Fully saturated RGB ``(len(hues), 3)`` float32 of the given hues."""
    return np.array([colorsys.hsv_to_rgb(h, 1.0, 1.0) for h in hues], dtype=np.float32)


@register("shapes")
class Shapes(FactorDataset):
    """Shapes3D-like coloured scenes rendered on the fly (see module docstring)."""

    name = "shapes"
    factor_names = ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation")
    factor_sizes = (10, 10, 10, 8, 4, 15)
    num_channels = 3
    factor_values = {
        "floor_hue": HUES,
        "wall_hue": HUES,
        "object_hue": HUES,
        "scale": SCALES,
        "shape": SHAPES,
        "orientation": AZIMUTHS,
    }

    # Per-process table shared by all instances: maps[shape, scale, orientation].
    _maps: np.ndarray | None = None
    _ready: np.ndarray | None = None

    def __init__(self, root=None, path=None):
        if path is not None:
            raise ValueError(
                f"'shapes' is rendered here and takes no path (got {path!r}); use 'shapes3d' to read the public file"
            )
        self._colours = hue_colours()

    _lock = threading.Lock()  # e.g. a prefetch thread and an evaluation in the main thread

    @classmethod
    def _ensure(cls, shape: np.ndarray, scale: np.ndarray) -> np.ndarray:
        if cls._ready is not None and cls._ready[shape, scale].all():
            return cls._maps
        with cls._lock:
            if cls._maps is None:
                cls._maps = np.zeros((len(SHAPES), len(SCALES), len(AZIMUTHS), 4, RES * RES), np.float32)
                cls._ready = np.zeros((len(SHAPES), len(SCALES)), bool)
            need = ~cls._ready[shape, scale]
            for sh, sc in sorted({(int(a), int(b)) for a, b in zip(shape[need], scale[need])}):
                cls._maps[sh, sc] = render_maps(sh, SCALES[sc]).reshape(len(AZIMUTHS), 4, -1)
                cls._ready[sh, sc] = True
        return cls._maps

    def prepare(self) -> Shapes:
        """Render all 480 map sets now (e.g. before forking DataLoader workers)."""
        sh, sc = np.meshgrid(np.arange(len(SHAPES)), np.arange(len(SCALES)), indexing="ij")
        self._ensure(sh.ravel(), sc.ravel())
        return self

    def _images(self, idx: np.ndarray) -> np.ndarray:
        floor, wall, obj, scale, shape, orient = np.unravel_index(idx, self.factor_sizes)
        maps = self._ensure(shape, scale)[shape, scale, orient]  # (n, 4, P)
        colours = np.empty((len(idx), 3, 4), np.float32)  # (n, c, m)
        colours[:, :, 0] = self._colours[floor]
        colours[:, :, 1] = self._colours[wall]
        colours[:, :, 2] = self._colours[obj]
        colours[:, :, 3] = 1.0
        img = np.matmul(colours, maps)  # (n, 3, P)
        np.clip(img, 0.0, 1.0, out=img)
        return img.reshape(len(idx), 3, RES, RES)
