"""`latentquant data fetch`: pooch downloads from a local http.server (no network).

The registry's URLs are redirected with $LATENTQUANT_DATA_URL, and its hashes
replaced by those of small files written here in each published format
(hdf5, h5, npz, a zip of PNGs): the download, verification and layout code is
the real one, only the bytes are small.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from latentquant.cli import main
from latentquant.data import fetch, get_dataset
from latentquant.data.files import DSPRITES_STEM, SHAPES3D_GRIDS, Falcor3D

FALCOR_SIZES = (2, 2, 2, 2, 2, 2, 2)


# ------------------------------------------------------------ local server
class _Server:
    """Serves ``files`` (name -> bytes); ``truncate[name]`` = how many next answers stop halfway;
    ``pages`` (names answered with an HTML page instead, as Google Drive does)."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.truncate: dict[str, int] = {}
        self.pages: set[str] = set()
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                name = self.path.lstrip("/")
                server.requests.append(name)
                if name in server.pages:
                    body = b"<html><body>Google Drive can't scan this file for viruses.</body></html>"
                elif name in server.files:
                    body = server.files[name]
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.truncate.get(name, 0) > 0:
                    server.truncate[name] -= 1
                    self.wfile.write(body[: len(body) // 2])  # then the connection closes early
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):  # idempotent
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


def _h5(write) -> bytes:
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        write(f)
    return buf.getvalue()


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _formats(rng) -> dict[str, tuple[bytes, dict]]:
    """remote name -> (bytes, what the loader must then read)."""
    n = 6
    classes = np.stack(
        [
            np.zeros(n, int),
            rng.integers(0, 3, n),
            rng.integers(0, 6, n),
            rng.integers(0, 40, n),
            rng.integers(0, 32, n),
            rng.integers(0, 32, n),
        ],
        1,
    )
    imgs = rng.integers(0, 2, (n, 64, 64), dtype=np.uint8)

    def dsprites(f):
        f["imgs"] = imgs
        f["latents/classes"] = classes

    shapes_images = rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)
    shapes_labels = np.stack([grid[rng.integers(0, len(grid), n)] for grid in SHAPES3D_GRIDS], 1)

    def shapes3d(f):
        f["images"] = shapes_images
        f["labels"] = shapes_labels

    toy = rng.integers(0, 256, (8, 64, 64, 3), dtype=np.uint8)
    complex_ = rng.integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    # Falcor3D: a full grid of 2**7 = 128 images (factor sizes patched to FALCOR_SIZES in the tests),
    # each one flat colour so the PNGs stay small
    grid = np.stack(np.unravel_index(np.arange(128), FALCOR_SIZES), 1)
    values = grid / (np.array(FALCOR_SIZES) - 1.0)
    colours = rng.integers(0, 256, (128, 1, 1, 3), dtype=np.uint8)
    falcor_small = np.broadcast_to(colours, (128, 64, 64, 3))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        labels = io.BytesIO()
        np.save(labels, values)
        zf.writestr("Falcor3D_down128/train-rec.labels", labels.getvalue())
        for i, small in enumerate(falcor_small):
            png = io.BytesIO()
            Image.fromarray(small.repeat(2, 0).repeat(2, 1)).save(png, format="PNG")
            zf.writestr(f"Falcor3D_down128/images/{i:06d}.png", png.getvalue())
        zf.writestr("__MACOSX/junk", b"not extracted")
    return {
        f"{DSPRITES_STEM}.hdf5": (_h5(dsprites), {"name": "dsprites", "images": imgs[:, None].astype(bool)}),
        "3dshapes.h5": (_h5(shapes3d), {"name": "shapes3d", "images": shapes_images.transpose(0, 3, 1, 2)}),
        "mpi3d_toy.npz": (
            _npz(images=toy),
            {
                "name": "mpi3d",
                "options": {"variant": "toy", "factor_sizes": (1, 1, 1, 1, 1, 2, 4)},
                "images": toy.transpose(0, 3, 1, 2),
            },
        ),
        "real3d_complicated_shapes_ordered.npz": (
            _npz(images=complex_),
            {
                "name": "mpi3d",
                "options": {"variant": "complex", "factor_sizes": (1, 1, 1, 1, 1, 2, 2)},
                "images": complex_.transpose(0, 3, 1, 2),
            },
        ),
        "Falcor3D_down128.zip": (buf.getvalue(), {"name": "falcor3d", "images": falcor_small.transpose(0, 3, 1, 2)}),
    }


@pytest.fixture
def served(tmp_path, monkeypatch):
    """A local server holding every format, the registry pointed at it, and a fresh data root."""
    rng = np.random.default_rng(0)
    formats = _formats(rng)
    server = _Server()
    for name, (body, _) in formats.items():
        server.files[name] = body
    # The registry keeps its structure; hashes become those of the small files (sha256 and md5 as published).
    entries = []
    for r in fetch.REGISTRY:
        body = formats.get(r.remote, (None,))[0]
        if body is not None and r.known_hash is not None:
            alg = r.known_hash.split(":")[0]
            r = dataclasses.replace(
                r,
                known_hash=f"{alg}:{hashlib.new(alg, body).hexdigest()}",
                size=len(body) if r.size is not None else None,
            )
        entries.append(r)
    monkeypatch.setattr(fetch, "REGISTRY", tuple(entries))
    monkeypatch.setattr(fetch, "MPI3D_COUNTS", {"toy": 8, "realistic": 8, "real": 8, "complex": 4})
    monkeypatch.setattr(Falcor3D, "factor_sizes", FALCOR_SIZES)
    monkeypatch.setenv(fetch.BASE_URL_ENV, server.url)
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    root = tmp_path / "data"
    monkeypatch.setenv("LATENTQUANT_DATA", str(root))
    yield server, formats, root
    server.close()


def _fetch(*args) -> int:
    return main(["data", "fetch", *args, "--no-progress"])


def _leftovers(root: Path) -> list[str]:
    """Anything under root besides the dataset files and the stamp file: temporaries, partial extractions."""
    known = {
        f"{DSPRITES_STEM}.hdf5",
        "3dshapes.h5",
        "mpi3d_toy.npz",
        "real3d_complicated_shapes_ordered.npz",
        "Falcor3D_down128",
        fetch.STAMPS,
        fetch.INCOMING,
    }
    found = [p.name for p in root.iterdir() if p.name not in known] if root.exists() else []
    incoming = root / fetch.INCOMING
    return found + ([f"{fetch.INCOMING}/{p.name}" for p in incoming.iterdir()] if incoming.exists() else [])


# -------------------------------------------------------------------- tests
def test_good_fetch_of_each_format_leaves_the_loader_layout(served, capsys):
    server, formats, root = served
    for args in (
        ["dsprites"],
        ["shapes3d"],
        ["mpi3d", "--variant", "toy"],
        ["mpi3d", "--variant", "complex"],
        ["falcor3d"],
    ):
        assert _fetch(*args) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "dsprites: downloading" in out and "sha256 verified" in out and "md5 verified" in out
    assert "128 images and labels" in out and "images uint8 (4, 64, 64, 3)" in out
    for remote, (_, expect) in formats.items():
        ds = get_dataset(expect["name"], **expect.get("options", {}))
        images = ds.get_images(np.arange(len(ds))).numpy()
        want = expect["images"].astype(np.float32) / (1 if expect["images"].dtype == bool else 255)
        np.testing.assert_array_equal(images, want, err_msg=remote)
    assert sorted(server.requests) == sorted(formats)  # each file downloaded exactly once
    assert (root / "Falcor3D_down128" / "images" / "000127.png").is_file()
    assert not (root / "Falcor3D_down128.zip").exists() and not (root / "__MACOSX").exists()
    assert _leftovers(root) == []


def test_refetch_of_a_present_file_downloads_nothing(served, capsys):
    server, formats, root = served
    assert _fetch("dsprites") == 0 and _fetch("falcor3d") == 0
    n = len(server.requests)
    assert _fetch("dsprites") == 0 and _fetch("falcor3d") == 0
    assert len(server.requests) == n
    out = capsys.readouterr().out
    assert f"dsprites: {root / (DSPRITES_STEM + '.hdf5')} already present, sha256 verified" in out
    assert "falcor3d: " in out and "already present, checked: 128 images and labels" in out
    # A present file with other bytes may be the user's: named, never overwritten, nothing downloaded.
    (root / f"{DSPRITES_STEM}.hdf5").write_bytes(b"mine")
    assert _fetch("dsprites") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "exists but its sha256 does not match the one published in" in err
    assert "move it away and run `latentquant data fetch dsprites` again" in err
    assert (root / f"{DSPRITES_STEM}.hdf5").read_bytes() == b"mine" and len(server.requests) == n


def test_wrong_hash_is_deleted_and_reported(served, capsys):
    server, formats, root = served
    server.files["3dshapes.h5"] = formats["3dshapes.h5"][0][:-1] + b"\0"  # one corrupt byte
    assert _fetch("shapes3d", "--retries", "0") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "shapes3d:" in err and "SHA256 hash of downloaded file" in err and "does not match" in err
    assert "tensorflow_datasets/datasets/shapes3d/checksums.tsv" in err  # the published source is named
    assert f"nothing was written to {root / '3dshapes.h5'}" in err
    assert not (root / "3dshapes.h5").exists() and _leftovers(root) == []


def test_interrupted_transfer_restarts_and_leaves_nothing_half_written(served, capsys):
    server, formats, root = served
    name = "mpi3d_toy.npz"
    server.truncate[name] = 5
    assert _fetch("mpi3d", "--variant", "toy", "--retries", "0") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"could not download {server.url}/{name} (ChunkedEncodingError)" in err
    assert f"download it by hand, put it at {root / name}" in err
    assert "latentquant data fetch mpi3d --variant toy" in err
    assert not (root / name).exists() and _leftovers(root) == []
    # One more break, then a whole answer: --retries 1 restarts the transfer from zero within one fetch.
    server.truncate[name] = 1
    before = len(server.requests)
    assert _fetch("mpi3d", "--variant", "toy", "--retries", "1") == 0
    assert len(server.requests) == before + 2
    assert (root / name).read_bytes() == formats[name][0] and _leftovers(root) == []


def test_unreachable_server_is_one_line_naming_url_and_manual_route(served, monkeypatch, capsys):
    server, _, root = served
    server.close()  # nothing listens there any more
    assert _fetch("dsprites", "--retries", "0") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"could not download {server.url}/{DSPRITES_STEM}.hdf5 (ConnectionError)" in err
    assert f"put it at {root / (DSPRITES_STEM + '.hdf5')}, then run `latentquant data fetch dsprites`" in err
    assert _leftovers(root) == []
    # The manual route: a file placed by hand is verified offline.
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{DSPRITES_STEM}.hdf5").write_bytes(served_bytes := server.files[f"{DSPRITES_STEM}.hdf5"])
    assert _fetch("dsprites") == 0
    assert "already present, sha256 verified" in capsys.readouterr().out
    assert (root / f"{DSPRITES_STEM}.hdf5").read_bytes() == served_bytes


def test_page_instead_of_archive_is_deleted_with_the_manual_route(served, capsys):
    server, formats, root = served
    server.pages.add("Falcor3D_down128.zip")
    assert _fetch("falcor3d") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "is not the dataset" in err and "is not a zip archive" in err and "it was deleted" in err
    assert "latentquant data fetch falcor3d --archive FILE" in err
    assert not (root / "Falcor3D_down128").exists() and _leftovers(root) == []
    # The manual route: a zip downloaded by hand is extracted and kept (it is the user's file).
    mine = root.parent / "Falcor3D_128x128.zip"
    mine.write_bytes(formats["Falcor3D_down128.zip"][0])
    assert _fetch("falcor3d", "--archive", str(mine)) == 0
    assert mine.exists() and len(get_dataset("falcor3d")) == 128 and _leftovers(root) == []


def test_incomplete_archive_is_not_moved_into_place(served, capsys):
    server, formats, root = served
    with zipfile.ZipFile(io.BytesIO(formats["Falcor3D_down128.zip"][0])) as src:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as dst:
            for info in src.infolist():
                if not info.filename.endswith("000002.png"):
                    dst.writestr(info, src.read(info))
    server.files["Falcor3D_down128.zip"] = buf.getvalue()
    assert _fetch("falcor3d") == 2
    assert "image 000002.png of 128 is missing" in capsys.readouterr().err
    assert not (root / "Falcor3D_down128").exists() and _leftovers(root) == []


def test_list_shows_size_destination_and_verification(served, capsys):
    server, formats, root = served
    assert _fetch("--list") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["dataset", "size", "destination", "status"]
    assert len(lines) == 1 + len(fetch.REGISTRY) + 1  # + the mirror note
    table = {line.split("  ")[0].strip(): line for line in lines[1:]}
    assert table["dsprites"].endswith("missing") and str(root / f"{DSPRITES_STEM}.hdf5") in table["dsprites"]
    assert "about 3.7 GB (README)" in table["falcor3d"] and "not published" in table["mpi3d toy"]
    assert f"{len(formats['3dshapes.h5'][0]) / 1e6:.1f} MB" in table["shapes3d"]
    assert _fetch("dsprites") == 0 and _fetch("mpi3d", "--variant", "complex") == 0
    capsys.readouterr()
    assert _fetch("--list") == 0
    out = capsys.readouterr().out
    assert "verified (sha256, at fetch)" in out and "present, checked (images uint8 (4, 64, 64, 3)" in out
    # Same size, other bytes, newer mtime: not verified any more; --verify hashes and finds it wrong.
    file = root / f"{DSPRITES_STEM}.hdf5"
    body = bytearray(file.read_bytes())
    body[-1] ^= 1
    file.write_bytes(bytes(body))
    assert _fetch("--list") == 0 and "present, not verified" in capsys.readouterr().out
    assert _fetch("--list", "--verify") == 0 and "present, WRONG sha256" in capsys.readouterr().out
    file.write_bytes(b"short")
    assert _fetch("--list") == 0 and "present, WRONG SIZE (5 bytes" in capsys.readouterr().out
    assert server.requests == [
        f"{DSPRITES_STEM}.hdf5",
        "real3d_complicated_shapes_ordered.npz",
    ]  # --list downloads nothing


def test_progress_bar_and_flag_errors(served, capsys):
    server, formats, root = served
    assert main(["data", "fetch", "dsprites"]) == 0  # progress bar on by default (tqdm on stderr)
    assert "B/s" in capsys.readouterr().err
    for args, message in [
        ([], "fetch needs a dataset NAME"),
        (["sprites"], "rendered by latentquant itself"),
        (["nope"], "no download for dataset 'nope'"),
        (["mpi3d", "--variant", "huge"], "unknown variant 'huge'"),
        (["dsprites", "--variant", "toy"], "dsprites has no variants"),
        (["dsprites", "--archive", "x.zip"], "--archive is for the zip archives"),
        (["--list", "dsprites"], "takes no NAME"),
        (["dsprites", "--verify"], "goes with --list"),
    ]:
        assert _fetch(*args) == 2, args
        assert message in capsys.readouterr().err, args


def test_loader_errors_name_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENTQUANT_DATA", str(tmp_path))
    for name, cmd in [
        ("dsprites", "latentquant data fetch dsprites`"),
        ("shapes3d", "latentquant data fetch shapes3d`"),
        ("mpi3d", "latentquant data fetch mpi3d --variant toy` (or another variant)"),
        ("isaac3d", "latentquant data fetch isaac3d`"),
    ]:
        with pytest.raises(FileNotFoundError, match="run `" + cmd.replace("(", r"\(").replace(")", r"\)")):
            get_dataset(name)
    with pytest.raises(FileNotFoundError, match=f"fetch mpi3d --variant real --root {tmp_path / 'r'}`"):
        get_dataset("mpi3d", root=tmp_path / "r", variant="real")
    (tmp_path / "Falcor3D_down128").mkdir()
    with pytest.raises(FileNotFoundError, match="train-rec.labels not found; run `latentquant data fetch falcor3d`"):
        get_dataset("falcor3d")


def test_registry_cites_a_source_for_every_entry_and_hashes_are_well_formed():
    lengths = {"sha256": 64, "md5": 32}
    for r in fetch.REGISTRY:
        assert r.source and r.url.startswith("https://"), r
        if r.known_hash is not None:
            alg, hexdigest = r.known_hash.split(":")
            assert len(hexdigest) == lengths[alg] and int(hexdigest, 16) >= 0, r
        else:  # no published hash: only Google Drive releases, each saying so
            assert "no hash" in r.source and "drive" in r.url, r
    assert {r.dataset for r in fetch.REGISTRY} == {"dsprites", "shapes3d", "mpi3d", "falcor3d", "isaac3d"}
    assert sorted(r.variant for r in fetch.REGISTRY if r.dataset == "mpi3d") == ["complex", "real", "realistic", "toy"]


def test_failed_move_keeps_a_complete_unhashed_download_for_the_next_try(served, monkeypatch, capsys):
    server, formats, root = served
    name = "real3d_complicated_shapes_ordered.npz"
    real_replace = fetch.os.replace

    def full_disk(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fetch.os, "replace", full_disk)
    assert _fetch("mpi3d", "--variant", "complex") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device" in err
    assert f"the download is kept at {root / fetch.INCOMING / name}" in err
    assert not (root / name).exists()
    monkeypatch.setattr(fetch.os, "replace", real_replace)
    assert _fetch("mpi3d", "--variant", "complex") == 0
    assert server.requests == [name]  # checked and moved into place, not downloaded again
    assert (root / name).read_bytes() == formats[name][0] and _leftovers(root) == []


def test_missing_pooch_is_one_line_naming_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(__import__("sys").modules, "pooch", None)  # import pooch now raises ImportError
    assert main(["data", "fetch", "dsprites", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert (
        err == "latentquant: error: latentquant data fetch needs the pooch package: pip install 'latentquant[data]'\n"
    )
    assert not any(tmp_path.iterdir())  # nothing started before the missing package was named


def test_archive_another_fetch_placed_first_is_accepted(served, monkeypatch, capsys):
    """Two fetches of one archive at once: the second finds the folder in place when it moves its own."""
    import shutil

    server, formats, root = served
    check = fetch.check_layout

    def other_process_finishes_first(remote, path):
        if fetch.INCOMING in str(path) and not (root / remote.target).exists():
            shutil.copytree(path, root / remote.target)
        return check(remote, path)

    monkeypatch.setattr(fetch, "check_layout", other_process_finishes_first)
    assert _fetch("falcor3d") == 0, capsys.readouterr().err
    assert "ready, checked: 128 images and labels" in capsys.readouterr().out
    assert len(get_dataset("falcor3d")) == 128 and _leftovers(root) == []
