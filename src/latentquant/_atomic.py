"""Atomic file writes: whatever a user saved is either the old file or the new one.

Every file the project writes for a user (checkpoints, configs, JSON, figures,
caches of decoded data) goes through ``atomic_path``: the content is written to
a unique temporary file in the destination folder, flushed to disk, then moved
over the destination with ``os.replace`` (atomic on POSIX and Windows). A crash
or Ctrl-C mid-write leaves the previous file intact and no temporary behind; a
failed write (a full disk) raises an OSError naming the destination, never the
hidden temporary file.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

__all__ = ["atomic_path", "atomic_open", "atomic_write_bytes", "atomic_write_text"]


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``.

    The caller writes the temporary file by any means (``np.save``,
    ``open_memmap``, ``fig.savefig``...) and closes it; its data is fsynced
    before the rename and the folder after it. On an exception the temporary
    file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp = _create_unique(path, suffix)
    except OSError as err:  # a folder we may not write into
        raise _naming(err, path) from err
    try:
        yield tmp
        _fsync(tmp, os.O_RDONLY)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise _naming(err, path) from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync(path.parent, os.O_RDONLY)


def _naming(err: OSError, path: Path) -> OSError:
    """``err`` as the failure to write ``path``: an error that names no file, or a hidden
    temporary file beside ``path`` (a name the user never chose), names ``path`` instead."""
    hidden = os.path.join(os.fspath(path.parent), f".{path.name}.")
    if err.filename is not None and not os.fspath(err.filename).startswith(hidden):
        return err
    return type(err)(err.errno, err.strerror, str(path)) if err.errno is not None else OSError(f"{path}: {err}")


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", **kwargs) -> Iterator[IO]:
    """``open(path, mode)`` whose result appears at ``path`` only once complete."""
    if not mode.startswith("w"):
        raise ValueError(f"atomic_open writes whole files: mode must start with 'w', got {mode!r}")
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as handle:
        yield handle


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def _create_unique(path: Path, suffix: str) -> Path:
    """An empty, new file ``.<name>.<random><suffix>`` beside ``path``.

    Unlike ``tempfile.mkstemp`` (always mode 0600) it is created with mode
    0666 minus the umask, so the final file has the permissions a plain
    ``open(path, 'w')`` would give it.
    """
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}{suffix}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue


def _fsync(path: Path, flags: int) -> None:
    """Best effort: some file systems refuse fsync on folders."""
    try:
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
