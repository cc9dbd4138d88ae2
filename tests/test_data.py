"""latentquant.data: interface, built-in renderers, public-file loaders, CLI."""

from __future__ import annotations

import hashlib
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from latentquant._optional import MissingExtra
from latentquant.cli import main
from latentquant.data import (
    DATASETS,
    FactorDataset,
    FactorIndexError,
    data_root,
    default_root,
    get_dataset,
    list_datasets,
    register,
)
from latentquant.data.files import DSPRITES_STEM, SHAPES3D_GRIDS, DSprites
from latentquant.validation import UserError

ALL_NAMES = ["dsprites", "falcor3d", "isaac3d", "mpi3d", "shapes", "shapes3d", "sprites"]


@pytest.fixture(scope="module")
def sprites():
    return get_dataset("sprites")


@pytest.fixture(scope="module")
def shapes():
    return get_dataset("shapes")


def _random_subset(sizes, n, rng):
    """n distinct factor combinations, in random order: (n, K) int64."""
    codes = rng.choice(int(np.prod(sizes)), size=n, replace=False)
    return np.stack(np.unravel_index(codes, sizes), -1).astype(np.int64)


# ---------------------------------------------------------------- registry
def test_registry_lists_all_and_rejects_unknown_names():
    assert list_datasets() == ALL_NAMES
    with pytest.raises(ValueError, match="unknown dataset 'nope'.*shapes3d.*sprites"):
        get_dataset("nope")
    with pytest.raises(TypeError):
        get_dataset(3)
    assert get_dataset("SPRITES").name == "sprites"


def test_library_errors_are_plain_value_and_type_errors(sprites):
    """The data layer raises ValueError/TypeError naming the input; UserError is the command line's."""
    cases = [
        (lambda: get_dataset("nope"), ValueError, r"^unknown dataset 'nope'; valid names: dsprites, "),
        (lambda: get_dataset(3), TypeError, r"^dataset name must be a string, got int$"),
        (lambda: get_dataset("sprites", colour=1), ValueError, r"^dataset 'sprites' has no option 'colour'"),
        (lambda: sprites.sample_indices(-1, np.random.default_rng()), ValueError, r"^n must be an integer >= 0"),
        (lambda: sprites.sample_indices(2, 0), TypeError, r"^rng must be a numpy\.random\.Generator, got int$"),
        (lambda: sprites.factors_to_index([[9, 0, 0, 0, 0]]), ValueError, r"^factor 'shape' has value 9"),
    ]
    for call, kind, message in cases:
        with pytest.raises(kind, match=message) as info:
            call()
        assert not isinstance(info.value, UserError)
    assert len(sprites.sample_indices(np.int64(3), np.random.default_rng())) == 3  # NumPy ints are counts too


def test_data_root_is_the_one_rule_for_where_files_live(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENTQUANT_DATA", str(tmp_path / "env"))
    assert data_root() == default_root() == tmp_path / "env"
    monkeypatch.delenv("LATENTQUANT_DATA")
    assert default_root() == Path.home() / ".cache" / "latentquant"
    monkeypatch.setenv("HOME", str(tmp_path))
    assert data_root("~/d") == tmp_path / "d" and data_root(tmp_path / "x") == tmp_path / "x"
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "d" / "3dshapes.h5")):
        get_dataset("shapes3d", root="~/d")  # a loader reads through it


def test_missing_h5py_is_missing_extra_naming_it(tmp_path, monkeypatch):
    (tmp_path / f"{DSPRITES_STEM}.npz").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py now raises ImportError
    with pytest.raises(MissingExtra, match=r"needs the h5py package: pip install 'latentquant\[data\]'"):
        get_dataset("dsprites", root=tmp_path)


def test_register_adds_a_dataset_in_one_entry():
    @register("tiny_test_grid")
    class Tiny(FactorDataset):
        name = "tiny_test_grid"
        factor_names = ("a", "b")
        factor_sizes = (2, 3)

        def __init__(self, root=None, path=None, level=0.5):
            self.level = level

        def _images(self, idx):
            return np.full((len(idx), 1, 64, 64), self.level, np.float32)

    try:
        ds = get_dataset("tiny_test_grid", level=0.25)
        assert len(ds) == 6 and ds.get_images([5]).max().item() == 0.25
        with pytest.raises(ValueError, match="already registered"):
            register("tiny_test_grid")(Tiny)
    finally:
        del DATASETS["tiny_test_grid"]


def test_builtins_take_no_path(tmp_path):
    for name in ("sprites", "shapes"):
        with pytest.raises(ValueError, match="takes no path"):
            get_dataset(name, path=tmp_path)
    assert len(get_dataset("sprites", root=tmp_path)) == 737_280  # root is ignored


# -------------------------------------------------------------- interface
@pytest.mark.parametrize(
    "name,sizes,channels",
    [
        ("sprites", (3, 6, 40, 32, 32), 1),
        ("shapes", (10, 10, 10, 8, 4, 15), 3),
    ],
)
def test_builtin_structure_and_round_trips(name, sizes, channels):
    ds = get_dataset(name)
    assert ds.factor_sizes == sizes and len(ds) == int(np.prod(sizes)) and ds.num_channels == channels
    assert len(ds.factor_names) == len(sizes)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(ds), 500)
    f = ds.index_to_factors(idx)
    assert f.dtype == np.int64 and f.shape == (500, len(sizes))
    assert np.array_equal(ds.factors_to_index(f), idx)
    # row-major, last factor fastest
    assert ds.index_to_factors([1])[0].tolist() == [0] * (len(sizes) - 1) + [1]
    assert ds.index_to_factors([len(ds) - 1])[0].tolist() == [s - 1 for s in sizes]
    sampled = ds.sample_factors(300, np.random.default_rng(1))
    assert sampled.shape == (300, len(sizes)) and (sampled >= 0).all() and (sampled < np.array(sizes)).all()
    assert np.array_equal(sampled, ds.sample_factors(300, np.random.default_rng(1)))


def test_getitem_and_batch_accessor(sprites, shapes):
    for ds in (sprites, shapes):
        idx = np.array([7, 123_456, 3, 7])
        images, factors = ds.get_images(idx), ds.get_factors(idx)
        assert images.dtype == torch.float32 and images.shape == (4, ds.num_channels, 64, 64)
        assert factors.dtype == torch.int64 and factors.shape == (4, ds.num_factors)
        assert images.min() >= 0.0 and images.max() <= 1.0
        for j, i in enumerate(idx):
            image, f = ds[int(i)]
            assert torch.equal(image, images[j]) and torch.equal(f, factors[j])
        assert torch.equal(ds[-1][0], ds[len(ds) - 1][0])
        assert torch.equal(ds.get_images(torch.tensor([3])), images[2:3])
    assert set(torch.unique(sprites.get_images(np.arange(0, 737_280, 997))).tolist()) == {0.0, 1.0}


def test_bad_indices_and_factors(sprites):
    with pytest.raises(IndexError):
        sprites[737_280]
    with pytest.raises(ValueError, match="out of range"):
        sprites.get_images([0, 737_280])
    with pytest.raises(FactorIndexError):
        sprites.index_to_factors([-1])
    with pytest.raises(TypeError):
        sprites[1.5]
    with pytest.raises(TypeError, match="integers"):
        sprites.get_images(np.array([0.5]))
    with pytest.raises(ValueError, match="1-d"):
        sprites.get_images(np.zeros((2, 2), int))
    with pytest.raises(ValueError, match="'orientation' has value 40, expected a class index in 0..39"):
        sprites.factors_to_index([[0, 0, 40, 0, 0]])
    with pytest.raises(ValueError, match="'shape' has value -1"):
        sprites.factors_to_index([[-1, 0, 0, 0, 0]])
    with pytest.raises(ValueError, match=r"shape \(n, 5\)"):
        sprites.factors_to_index([[0, 0, 0]])
    with pytest.raises(TypeError):
        sprites.factors_to_index([[0, 0, 0.5, 0, 0]])
    with pytest.raises(TypeError, match="Generator"):
        sprites.sample_factors(3, 0)
    with pytest.raises(ValueError):
        sprites.sample_factors(-1, np.random.default_rng())
    assert sprites.factors_to_index([1, 2, 3, 4, 5]).tolist() == [((((1 * 6 + 2) * 40 + 3) * 32 + 4) * 32 + 5)]


def test_dataloader_batches(sprites):
    loader = torch.utils.data.DataLoader(
        sprites, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0)
    )
    images, factors = next(iter(loader))
    assert images.shape == (16, 1, 64, 64) and factors.shape == (16, 5)
    assert torch.equal(images, sprites.get_images(sprites.factors_to_index(factors.numpy())))


# ---------------------------------------------------------------- sprites
def test_sprites_positions_are_exact_translations(sprites):
    base = np.array([[2, 5, 7, 3, 9], [0, 0, 13, 3, 9], [1, 2, 30, 3, 9]])
    for f in base:
        img = sprites.get_images(sprites.factors_to_index(f))[0, 0]
        right = f.copy()
        right[3] += 1
        down = f.copy()
        down[4] += 1
        assert torch.equal(sprites.get_images(sprites.factors_to_index(right))[0, 0], torch.roll(img, 1, 1))
        assert torch.equal(sprites.get_images(sprites.factors_to_index(down))[0, 0], torch.roll(img, 1, 0))
    # centres at 16 + 31 * pos pixels, x to the right and y downward (square, orientation 0)
    for px, py in [(0, 0), (31, 0), (0, 31), (31, 31), (10, 20)]:
        img = sprites.get_images(sprites.factors_to_index([0, 5, 0, px, py]))[0, 0].numpy()
        rows, cols = np.nonzero(img)
        assert cols.mean() + 0.5 == pytest.approx(16 + px) and rows.mean() + 0.5 == pytest.approx(16 + py)


def test_sprites_each_factor_changes_the_image(sprites):
    rng = np.random.default_rng(3)
    for base in _random_subset(sprites.factor_sizes, 12, rng):
        img = sprites.get_images(sprites.factors_to_index(base))
        for k, size in enumerate(sprites.factor_sizes):
            other = base.copy()
            other[k] = base[k] + 1 if base[k] + 1 < size else base[k] - 1
            assert not torch.equal(sprites.get_images(sprites.factors_to_index(other)), img), (base, k)
    # shapes and scales are all distinct at every tested pose; orientation 0 and 2 pi coincide as in dSprites
    f = np.array([[s, c, 5, 16, 16] for s in range(3) for c in range(6)])
    flat = sprites.get_images(sprites.factors_to_index(f)).reshape(18, -1)
    assert len(torch.unique(flat, dim=0)) == 18
    same = sprites.factors_to_index([[2, 3, 0, 4, 4], [2, 3, 39, 4, 4]])
    assert torch.equal(*sprites.get_images(same))
    area = sprites.get_images(sprites.factors_to_index([[0, c, 0, 16, 16] for c in range(6)])).sum((1, 2, 3))
    assert (area.diff() > 0).all()  # scale grows the sprite


# ----------------------------------------------------------------- shapes
def test_shapes_each_factor_changes_the_image_and_values_are_distinct(shapes):
    rng = np.random.default_rng(4)
    for base in _random_subset(shapes.factor_sizes, 6, rng):
        for k, size in enumerate(shapes.factor_sizes):
            f = np.repeat(base[None], size, 0)
            f[:, k] = np.arange(size)
            flat = shapes.get_images(shapes.factors_to_index(f)).reshape(size, -1)
            assert len(torch.unique(flat, dim=0)) == size, (base, shapes.factor_names[k])


def test_shapes_distinct_combinations_give_distinct_images(shapes):
    # every geometry (scale, shape, orientation) at fixed hues ...
    geo = np.stack(np.meshgrid(np.arange(8), np.arange(4), np.arange(15), indexing="ij"), -1).reshape(-1, 3)
    f = np.concatenate([np.tile([1, 1, 6], (len(geo), 1)), geo], 1)  # floor hue == wall hue
    flat = shapes.get_images(shapes.factors_to_index(f)).reshape(len(f), -1)
    assert len(torch.unique(flat, dim=0)) == 480
    # ... every hue triple at a fixed geometry ...
    hues = np.stack(np.meshgrid(*[np.arange(10)] * 3, indexing="ij"), -1).reshape(-1, 3)
    f = np.concatenate([hues, np.tile([0, 2, 7], (1000, 1))], 1)
    flat = shapes.get_images(shapes.factors_to_index(f)).reshape(1000, -1)
    assert len(torch.unique(flat, dim=0)) == 1000
    # ... and random distinct indices
    idx = np.random.default_rng(5).choice(len(shapes), 1500, replace=False)
    assert len(torch.unique(shapes.get_images(idx).reshape(1500, -1), dim=0)) == 1500


def test_shapes_scene_layout(shapes):
    # object hue shows in the middle, floor hue at the bottom row, wall hue at the top row
    img = shapes.get_images(shapes.factors_to_index([0, 4, 6, 7, 0, 7]))[
        0
    ].numpy()  # red floor, green wall, blue object
    assert img[0, -1].mean() > 0.5 and img[1, -1].mean() < 0.1  # bottom row red
    assert img[1, 0].mean() > 0.4 and img[0, 0].mean() < 0.1  # top row green
    assert img[2, 32, 32] > 0.3 and img[0, 32, 32] < 0.1  # centre blue

    # the wall/floor boundary tilts with the view: its row differs at the left and right edges
    def boundary_rows(orientation):
        im = shapes.get_images(shapes.factors_to_index([0, 4, 0, 0, 2, orientation]))[0].numpy()
        redness = im[0] - im[1]  # floor red, wall green
        return [int(np.argmax(redness[:, c] > 0)) for c in (0, 63)]

    left, right = boundary_rows(0)
    assert left != right and boundary_rows(14) == [right, left]


def test_render_is_deterministic_across_processes(sprites, shapes):
    code = (
        "import hashlib, numpy as np\n"
        "from latentquant.data import get_dataset\n"
        "for name in ('sprites', 'shapes'):\n"
        "    ds = get_dataset(name)\n"
        "    idx = np.random.default_rng(11).integers(0, len(ds), 64)\n"
        "    print(hashlib.sha256(ds.get_images(idx).numpy().tobytes()).hexdigest())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    mine = []
    for ds in (sprites, shapes):
        idx = np.random.default_rng(11).integers(0, len(ds), 64)
        mine.append(hashlib.sha256(ds.get_images(idx).numpy().tobytes()).hexdigest())
    assert out == mine


# ------------------------------------------------------------ public files
def _dsprites_arrays(rng, n=40):
    classes5 = _random_subset((3, 6, 40, 32, 32), n, rng)
    classes = np.concatenate([np.zeros((n, 1), np.int64), classes5], 1)
    imgs = (rng.random((n, 64, 64)) < 0.3).astype(np.uint8)
    return imgs, classes


@pytest.mark.parametrize("fmt", ["npz", "npz_stored", "hdf5"])
def test_dsprites_file_round_trip(tmp_path, monkeypatch, fmt):
    rng = np.random.default_rng(6)
    imgs, classes = _dsprites_arrays(rng)
    if fmt == "hdf5":
        file = tmp_path / f"{DSPRITES_STEM}.hdf5"
        with h5py.File(file, "w") as f:
            f["imgs"] = imgs
            f["latents/classes"] = classes
            f["latents/values"] = classes.astype(float)
    else:
        file = tmp_path / f"{DSPRITES_STEM}.npz"
        save = np.savez if fmt == "npz_stored" else np.savez_compressed
        save(file, imgs=imgs, latents_classes=classes, latents_values=classes.astype(float))
    monkeypatch.setattr(DSprites, "SLAB", 7)  # several slabs, the last one partial
    monkeypatch.setenv("LATENTQUANT_DATA", str(tmp_path))
    ds = get_dataset("dsprites")  # found under $LATENTQUANT_DATA
    assert len(ds) == 40 and ds.factor_sizes == (3, 6, 40, 32, 32) and ds.num_channels == 1
    assert np.array_equal(ds.get_images(np.arange(40)).numpy()[:, 0], imgs.astype(np.float32))
    assert np.array_equal(ds.index_to_factors(np.arange(40)), classes[:, 1:])
    perm = rng.permutation(40)
    assert np.array_equal(ds.factors_to_index(classes[perm, 1:]), perm)
    image, f = ds[17]
    assert torch.equal(image[0], torch.from_numpy(imgs[17]).float()) and f.tolist() == classes[17, 1:].tolist()
    absent = next(c for c in _random_subset((3, 6, 40, 32, 32), 100, rng) if not (c == classes[:, 1:]).all(1).any())
    with pytest.raises(ValueError, match="no image has factors"):
        ds.factors_to_index(absent)
    drawn = ds.sample_factors(50, np.random.default_rng(0))
    assert all((row == classes[:, 1:]).all(1).any() for row in drawn)  # only combinations the file holds
    assert np.array_equal(get_dataset("dsprites", path=file).get_images([3]), ds.get_images([3]))


def test_dsprites_bad_files(tmp_path):
    rng = np.random.default_rng(7)
    imgs, classes = _dsprites_arrays(rng, 5)
    cases = {
        "two.npz": dict(imgs=imgs * 2, latents_classes=classes),
        "shape.npz": dict(imgs=imgs[:, :32], latents_classes=classes),
        "nokey.npz": dict(imgs=imgs),
        "count.npz": dict(imgs=imgs, latents_classes=classes[:4]),
        "cols.npz": dict(imgs=imgs, latents_classes=classes[:, 1:]),
        "range.npz": dict(imgs=imgs, latents_classes=classes + np.array([0, 3, 0, 0, 0, 0])),
    }
    messages = {
        "two.npz": "0/1 pixels",
        "shape.npz": r"shape \(N, 64, 64\)",
        "nokey.npz": "no key 'latents_classes'",
        "count.npz": "5 images but 4 label rows",
        "cols.npz": r"\(N, 6\)",
        "range.npz": "shape class [3-5]",
    }
    for name, arrays in cases.items():
        np.savez_compressed(tmp_path / name, **arrays)
        with pytest.raises(ValueError, match=messages[name]) as err:
            get_dataset("dsprites", path=tmp_path / name)
        assert name in str(err.value)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="neither an npz"):
        get_dataset("dsprites", path=tmp_path / "junk.npz")
    with h5py.File(tmp_path / "bad.hdf5", "w") as f:
        f["imgs"] = imgs
    with pytest.raises(ValueError, match="latents/classes"):
        get_dataset("dsprites", path=tmp_path / "bad.hdf5")


def test_missing_files_say_where_and_where_published(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENTQUANT_DATA", str(tmp_path / "env"))
    expect = {
        "dsprites": "deepmind/dsprites-dataset",
        "shapes3d": "deepmind/3d-shapes",
        "mpi3d": "rr-learning/disentanglement_dataset",
        "falcor3d": "NVlabs/High-res",
        "isaac3d": "NVlabs/High-res",
    }
    for name, url in expect.items():
        with pytest.raises(FileNotFoundError, match=url) as err:
            get_dataset(name)
        assert str(tmp_path / "env") in str(err.value)
        with pytest.raises(FileNotFoundError, match="nothere"):
            get_dataset(name, path=tmp_path / "nothere")
        with pytest.raises(FileNotFoundError) as err:
            get_dataset(name, root=tmp_path / "other")
        assert str(tmp_path / "other") in str(err.value)
    with pytest.raises(FileNotFoundError, match="real3d_complicated_shapes_ordered.npz.*mpi3d_toy.npz"):
        get_dataset("mpi3d", root=tmp_path)
    with pytest.raises(ValueError, match="unknown variant"):
        get_dataset("mpi3d", root=tmp_path, variant="huge")


def _write_shapes3d(file, rng, n=30, noise=0.0):
    classes = _random_subset((10, 10, 10, 8, 4, 15), n, rng)
    labels = np.stack([SHAPES3D_GRIDS[k][classes[:, k]] for k in range(6)], 1) + noise
    images = rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)
    with h5py.File(file, "w") as f:
        f["images"] = images
        f["labels"] = labels
    return images, classes


def test_shapes3d_file_round_trip(tmp_path):
    rng = np.random.default_rng(8)
    images, classes = _write_shapes3d(tmp_path / "3dshapes.h5", rng, noise=1e-9)
    ds = get_dataset("shapes3d", root=tmp_path)
    assert len(ds) == 30 and ds.factor_sizes == (10, 10, 10, 8, 4, 15) and ds.num_channels == 3
    assert np.array_equal(ds.index_to_factors(np.arange(30)), classes)
    idx = np.array([29, 3, 3, 0, 17])  # unsorted, repeated
    expected = images[idx].transpose(0, 3, 1, 2).astype(np.float32) / 255
    assert np.array_equal(ds.get_images(idx).numpy(), expected)
    assert np.array_equal(ds.get_images([5]).numpy(), images[[5]].transpose(0, 3, 1, 2) / np.float32(255))
    assert np.array_equal(ds.factors_to_index(classes[idx]), idx)
    # the lazy h5 handle survives pickling and forked DataLoader workers
    clone = pickle.loads(pickle.dumps(ds))
    assert torch.equal(clone.get_images(idx), ds.get_images(idx))
    loader = torch.utils.data.DataLoader(ds, batch_size=10, num_workers=2)
    batches = list(loader)
    assert torch.equal(torch.cat([b[0] for b in batches]), ds.get_images(np.arange(30)))


def test_shapes3d_bad_files(tmp_path):
    rng = np.random.default_rng(9)
    _write_shapes3d(tmp_path / "off.h5", rng, noise=0.03)  # 0.03 off a 0.1-spaced hue grid
    with pytest.raises(ValueError, match="floor_hue value .* not on the grid") as err:
        get_dataset("shapes3d", path=tmp_path / "off.h5")
    assert "off.h5" in str(err.value)
    with h5py.File(tmp_path / "shape.h5", "w") as f:
        f["images"] = np.zeros((2, 64, 64), np.uint8)
        f["labels"] = np.zeros((2, 6))
    with pytest.raises(ValueError, match=r"uint8 \(N, 64, 64, 3\)"):
        get_dataset("shapes3d", path=tmp_path / "shape.h5")
    with h5py.File(tmp_path / "labels.h5", "w") as f:
        f["images"] = np.zeros((2, 64, 64, 3), np.uint8)
        f["labels"] = np.zeros((2, 5))
    with pytest.raises(ValueError, match=r"'labels' must have shape \(2, 6\)"):
        get_dataset("shapes3d", path=tmp_path / "labels.h5")
    (tmp_path / "text.h5").write_text("hello")
    with pytest.raises(ValueError, match="not an hdf5"):
        get_dataset("shapes3d", path=tmp_path / "text.h5")


@pytest.mark.parametrize("compressed", [False, True])
def test_mpi3d_npz_memory_mapped(tmp_path, compressed):
    rng = np.random.default_rng(10)
    sizes = (2, 2, 1, 1, 3, 2, 3)
    images = rng.integers(0, 256, (int(np.prod(sizes)), 64, 64, 3), dtype=np.uint8)
    data = tmp_path / "data"
    data.mkdir()
    file = data / "mpi3d_toy.npz"
    (np.savez_compressed if compressed else np.savez)(file, images=images)
    if compressed:
        with pytest.warns(UserWarning, match="compressed and cannot be memory-mapped; extracting it once"):
            ds = get_dataset("mpi3d", root=data, factor_sizes=sizes)
    else:
        ds = get_dataset("mpi3d", root=data, factor_sizes=sizes)
    mm = ds._open()
    assert isinstance(mm, np.memmap) and len(ds) == 72 and ds.factor_sizes == sizes
    extracted = data / "extracted" / "mpi3d_toy.images.npy"
    if compressed:
        assert os.path.realpath(mm.filename) == str(extracted)
        assert [p.name for p in (data / "extracted").iterdir()] == [extracted.name]  # no temp file left
        mtime = extracted.stat().st_mtime_ns
        get_dataset("mpi3d", root=data, factor_sizes="2,2,1,1,3,2,3")
        assert extracted.stat().st_mtime_ns == mtime  # extracted once
    else:
        assert os.path.realpath(mm.filename) == str(file) and not extracted.exists()
    idx = np.array([71, 0, 35, 35])
    assert np.array_equal(ds.get_images(idx).numpy(), images[idx].transpose(0, 3, 1, 2) / np.float32(255))
    assert ds.index_to_factors([71])[0].tolist() == [s - 1 for s in sizes]
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._mm is None and torch.equal(clone.get_images(idx), ds.get_images(idx))
    with pytest.raises(ValueError, match="image count 72"):
        get_dataset("mpi3d", root=data, factor_sizes=(2, 2, 2, 1, 3, 2, 3))


def test_mpi3d_sizes_follow_the_image_count(tmp_path):
    # sparse .npy files with the real counts (no disk space is used for the zeros)
    for n, sizes in [(460_800, (4, 4, 2, 3, 3, 40, 40)), (1_036_800, (6, 6, 2, 3, 3, 40, 40))]:
        file = tmp_path / f"images_{n}.npy"
        mm = np.lib.format.open_memmap(file, mode="w+", dtype=np.uint8, shape=(n, 64, 64, 3))
        mm[n - 1] = 200
        del mm
        ds = get_dataset("mpi3d", path=file)
        assert ds.factor_sizes == sizes and len(ds) == n
        assert ds.get_images([n - 1]).min().item() == pytest.approx(200 / 255)
        assert ds.get_images([0]).max().item() == 0.0
        file.unlink()
    np.save(tmp_path / "odd.npy", np.zeros((5, 64, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="holds 5 images; expected 460,800 or 1,036,800"):
        get_dataset("mpi3d", path=tmp_path / "odd.npy")
    np.savez(tmp_path / "nokey.npz", imgs=np.zeros((2, 64, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="no key 'images'"):
        get_dataset("mpi3d", path=tmp_path / "nokey.npz")
    np.save(tmp_path / "gray.npy", np.zeros((2, 64, 64), np.uint8))
    with pytest.raises(ValueError, match=r"uint8 \(N, 64, 64, 3\)"):
        get_dataset("mpi3d", path=tmp_path / "gray.npy")


def _write_png_folder(folder, labels_file, sizes, rng, n=12, blocky=True):
    """A Falcor3D/Isaac3D-style folder; returns the expected 64 px images and the classes."""
    (folder / "images").mkdir(parents=True)
    classes = _random_subset(sizes, n, rng)
    values = classes / (np.array(sizes) - 1.0)
    with open(folder / labels_file, "wb") as fh:  # keep the exact file name (np.save would add .npy)
        np.save(fh, values)
    expected = []
    for i in range(n):
        if blocky:  # 2 x 2 constant blocks: the 128 -> 64 box filter is exact
            small = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
            big = small.repeat(2, 0).repeat(2, 1)
        else:
            big = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
            small = big.reshape(64, 2, 64, 2, 3).mean((1, 3))
        Image.fromarray(big).save(folder / "images" / f"{i:06d}.png")
        expected.append(small)
    return np.stack(expected), classes


@pytest.mark.parametrize(
    "name,folder,labels_file,sizes",
    [
        ("falcor3d", "Falcor3D_down128", "train-rec.labels", (5, 6, 6, 6, 6, 6, 6)),
        ("isaac3d", "Isaac3D_down128", "labels.npy", (3, 8, 5, 4, 4, 4, 6, 4, 4)),
    ],
)
def test_png_folders_round_trip(tmp_path, name, folder, labels_file, sizes):
    rng = np.random.default_rng(12)
    expected, classes = _write_png_folder(tmp_path / folder, labels_file, sizes, rng)
    ds = get_dataset(name, root=tmp_path)
    assert ds.factor_sizes == sizes and len(ds) == 12 and ds.num_channels == 3
    assert np.array_equal(ds.index_to_factors(np.arange(12)), classes)
    idx = np.array([11, 2, 5])
    assert np.array_equal(ds.get_images(idx).numpy(), expected[idx].transpose(0, 3, 1, 2) / np.float32(255))
    assert np.array_equal(ds.factors_to_index(classes[idx]), idx)
    # general content: box-filtered to within one grey level of the 2 x 2 mean
    smooth, _ = _write_png_folder(tmp_path / "other" / folder, labels_file, sizes, rng, n=3, blocky=False)
    got = get_dataset(name, path=tmp_path / "other" / folder).get_images([0, 1, 2]).numpy()
    assert np.abs(got * 255 - smooth.transpose(0, 3, 1, 2)).max() <= 1.0


def test_png_folder_bad_inputs(tmp_path):
    rng = np.random.default_rng(13)
    sizes = (5, 6, 6, 6, 6, 6, 6)
    _write_png_folder(tmp_path / "a", "train-rec.labels", sizes, rng, n=4)
    ds = get_dataset("falcor3d", path=tmp_path / "a")
    (tmp_path / "a" / "images" / "000002.png").unlink()
    with pytest.raises(FileNotFoundError, match="000002.png"):
        ds.get_images([2])
    (tmp_path / "a" / "images" / "000003.png").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="000003.png is not a readable image"):
        ds.get_images([3])
    Image.fromarray(np.zeros((128, 96, 3), np.uint8)).save(tmp_path / "a" / "images" / "000001.png")
    with pytest.raises(ValueError, match="96x128, expected a square"):
        ds.get_images([1])
    with open(tmp_path / "a" / "train-rec.labels", "wb") as fh:
        np.save(fh, np.full((4, 7), 0.1))  # 0.1 * 4 = 0.4: between intensity classes
    with pytest.raises(ValueError, match="lighting_intensity value 0.1 in row 0 is not on the grid"):
        get_dataset("falcor3d", path=tmp_path / "a")
    with open(tmp_path / "a" / "train-rec.labels", "wb") as fh:
        np.save(fh, np.zeros((4, 6)))
    with pytest.raises(ValueError, match=r"shape \(N, 7\), got \(4, 6\)"):
        get_dataset("falcor3d", path=tmp_path / "a")
    (tmp_path / "a" / "train-rec.labels").write_bytes(b"junk")
    with pytest.raises(ValueError, match="train-rec.labels is not a readable .npy"):
        get_dataset("falcor3d", path=tmp_path / "a")
    (tmp_path / "b" / "images").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="labels.npy not found.*NVlabs"):
        get_dataset("isaac3d", path=tmp_path / "b")


def test_labelled_full_grid_in_order_acts_as_a_grid(tmp_path):
    sizes = (2, 1, 1, 1, 1, 1, 3)
    rng = np.random.default_rng(14)
    folder = tmp_path / "Falcor3D_down128"
    (folder / "images").mkdir(parents=True)
    classes = np.stack(np.unravel_index(np.arange(6), sizes), -1)
    full = np.zeros((6, 7), np.int64)
    full[:, [0, 6]] = classes[:, [0, 6]]
    with open(folder / "train-rec.labels", "wb") as fh:
        np.save(fh, full / (np.array((5, 6, 6, 6, 6, 6, 6)) - 1.0))
    ds = get_dataset("falcor3d", root=tmp_path)
    assert ds._labels is not None  # a subset of the 233,280 grid

    # a labelled file covering its whole grid in row-major order keeps no lookup table
    class Small(FactorDataset):
        name, factor_names, factor_sizes = "small", ("a", "b"), (2, 3)

    small = Small()
    small._set_labels(np.stack(np.unravel_index(np.arange(6), (2, 3)), -1))
    assert small._labels is None and small.factors_to_index([[1, 2]]).tolist() == [5]
    small._set_labels(np.array([[1, 2], [0, 0]]))
    assert len(small) == 2 and small.factors_to_index([[0, 0], [1, 2]]).tolist() == [1, 0]
    with pytest.raises(ValueError, match="row 0 has b class 3"):
        small._set_labels(np.array([[1, 3]]))
    del rng


# -------------------------------------------------------------------- CLI
def test_cli_info_and_show(tmp_path, capsys):

    assert main(["data", "info", "sprites"]) == 0
    out = capsys.readouterr().out
    assert "737,280 images" in out and "orientation  40" in out and "posY" in out
    assert main(["data", "list"]) == 0
    assert capsys.readouterr().out.split() == ALL_NAMES
    png = tmp_path / "figs" / "sprites.png"
    assert main(["data", "show", "sprites", "--out", str(png), "--n", "5", "--seed", "3"]) == 0
    with Image.open(png) as im:
        assert im.format == "PNG" and im.width > 200
    assert [p.name for p in png.parent.iterdir()] == ["sprites.png"]  # atomic: no temp file left


def test_cli_show_public_file_and_errors(tmp_path, capsys):

    rng = np.random.default_rng(15)
    _write_shapes3d(tmp_path / "3dshapes.h5", rng, n=6)
    png = tmp_path / "s3d.png"
    assert main(["data", "show", "shapes3d", "--root", str(tmp_path), "--out", str(png), "--n", "4"]) == 0
    assert png.stat().st_size > 1000
    assert main(["data", "info", "shapes3d", "--path", str(tmp_path / "3dshapes.h5")]) == 0
    assert "6 images" in capsys.readouterr().out
    assert main(["data", "info", "nope"]) == 2
    assert "unknown dataset 'nope'" in capsys.readouterr().err
    assert main(["data", "info", "dsprites", "--root", str(tmp_path)]) == 2
    assert "dsprites: not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["data", "show", "sprites", "--n", "0"])


def test_cli_unknown_option_is_one_line_exit_2(tmp_path, capsys):
    """Issue 12 section 4: `data info sprites -O foo=1` was a TypeError traceback."""

    assert main(["data", "info", "sprites", "-O", "foo=1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "dataset 'sprites' has no option 'foo'; it takes no options" in err
    assert main(["data", "info", "mpi3d", "--root", str(tmp_path), "-O", "colour=red"]) == 2
    assert "has no option 'colour'; its options are variant, factor_sizes" in capsys.readouterr().err
    assert main(["data", "show", "sprites", "-O", "root=x"]) == 2
    assert "use --root" in capsys.readouterr().err
    with pytest.raises(ValueError, match="has no option 'foo'"):
        get_dataset("shapes", foo=1)


def test_zip_member_offsets_with_extra_fields(tmp_path):
    """A stored member whose local header carries an extra field is still mapped at the right offset."""
    images = np.arange(2 * 64 * 64 * 3, dtype=np.uint64).astype(np.uint8).reshape(2, 64, 64, 3)
    plain = tmp_path / "plain.npz"
    np.savez(plain, images=images)
    file = tmp_path / "extra.npz"
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(file, "w", zipfile.ZIP_STORED) as dst:
        info = src.getinfo("images.npy")
        info.extra = b"\xfe\xca\x04\x00abcd"  # an unknown 4-byte extra block
        dst.writestr(info, src.read("images.npy"))
    ds = get_dataset("mpi3d", path=file, factor_sizes=(2, 1, 1, 1, 1, 1, 1))
    assert np.array_equal(ds.get_images([0, 1]).numpy(), images.transpose(0, 3, 1, 2) / np.float32(255))


def test_png_folder_cache(tmp_path):
    rng = np.random.default_rng(16)
    expected, _ = _write_png_folder(tmp_path / "Isaac3D_down128", "labels.npy", (3, 8, 5, 4, 4, 4, 6, 4, 4), rng, n=5)
    with pytest.warns(UserWarning, match="decoding 5 images once"):
        ds = get_dataset("isaac3d", root=tmp_path, cache=True)
    files = list((tmp_path / "extracted").iterdir())
    assert len(files) == 1 and files[0].name.startswith("isaac3d_64_") and files[0].suffix == ".npy"
    (tmp_path / "Isaac3D_down128" / "images" / "000004.png").unlink()  # served from the cache now
    idx = np.array([4, 0, 2])
    assert np.array_equal(ds.get_images(idx).numpy(), expected[idx].transpose(0, 3, 1, 2) / np.float32(255))
    again = get_dataset("isaac3d", root=tmp_path, cache=True)  # reuses the cache, no decoding
    clone = pickle.loads(pickle.dumps(again))
    assert torch.equal(clone.get_images(idx), ds.get_images(idx))


def test_empty_requests(sprites, tmp_path):
    assert sprites.get_images([]).shape == (0, 1, 64, 64)
    assert sprites.get_factors([]).shape == (0, 5)
    assert sprites.factors_to_index(np.zeros((0, 5), np.int64)).shape == (0,)
    _write_shapes3d(tmp_path / "3dshapes.h5", np.random.default_rng(17), n=3)
    assert get_dataset("shapes3d", root=tmp_path).get_images(np.array([], np.int64)).shape == (0, 3, 64, 64)


def test_shapes_concurrent_first_use_from_threads(shapes):
    import concurrent.futures

    f = shapes.sample_factors(4 * 32, np.random.default_rng(18))
    f[:, 3], f[:, 4] = 3, np.arange(len(f)) % 2  # two (scale, shape) groups
    idx = shapes.factors_to_index(f).reshape(4, 32)
    expected = [shapes.get_images(i) for i in idx]
    type(shapes)._maps = type(shapes)._ready = None  # force lazy rendering again
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        got = list(pool.map(type(shapes)().get_images, idx))
    for g, e in zip(got, expected):
        assert torch.equal(g, e)
    assert type(shapes)._ready.sum() == 2
