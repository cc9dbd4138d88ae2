"""The run directory: its layout, ownership, lock and status, in one place.

    OUT/
      .latentquant-run    the marker, written first: the run id; only a marked folder is ours
      .latentquant-lock   held (flock) by the process writing the run; holds its pid
      config.yaml         the resolved config
      metrics.jsonl       one JSON line per logged step
      eval.json           the last evaluation; evals.jsonl: every evaluation
      checkpoints/        step_<step>.safetensors
      figures/            PNGs of the last evaluation
      report.md           one page linking all of the above
      tensorboard/        when the tensorboard package is installed
      train.log, jobs/    a sweep's log of the run, and its launcher's job files

Rules (docs/training.md, "Whose files"): the tool writes into a folder only
when it is new, empty or marked as a run; ``overwrite`` deletes only the
files in the layout above, never anything else in the folder; one process
at a time holds a run (``fcntl.flock``, released by the kernel when the
process ends, however it ends, so a lock is never stale).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from latentquant._atomic import atomic_write_text
from latentquant.validation import UserError

MARKER = ".latentquant-run"
LOCK = ".latentquant-lock"
FILES = ("config.yaml", "metrics.jsonl", "eval.json", "evals.jsonl", "report.md", "train.log")
FOLDERS = ("checkpoints", "figures", "tensorboard", "wandb", "jobs")
SWEEP = ("train.log", "jobs")  # a sweep's own files: not a run's output, kept by --overwrite


class RunDir:
    """A run directory: paths of its files, its marker and lock, and its status."""

    def __init__(self, path: str | os.PathLike):
        if str(path).strip() == "":
            raise UserError("--out is empty; name a run directory, e.g. --out runs/q")
        self.path = Path(path)
        self._lock_fd: int | None = None

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # -- layout -------------------------------------------------------------

    config = property(lambda self: self.path / "config.yaml")
    metrics = property(lambda self: self.path / "metrics.jsonl")
    eval = property(lambda self: self.path / "eval.json")
    evals = property(lambda self: self.path / "evals.jsonl")
    report = property(lambda self: self.path / "report.md")
    checkpoints = property(lambda self: self.path / "checkpoints")
    figures = property(lambda self: self.path / "figures")
    tensorboard = property(lambda self: self.path / "tensorboard")
    log = property(lambda self: self.path / "train.log")
    marker = property(lambda self: self.path / MARKER)

    # -- ownership ----------------------------------------------------------

    def is_marked(self) -> bool:
        return self.marker.is_file()

    def is_ours(self) -> bool:
        """Marked, or a run written before markers existed (a config.yaml that reads as a
        run's config, and a checkpoint): such a run is marked when next acquired."""
        if self.is_marked():
            return True
        try:
            self.read_config()
        except (ValueError, OSError):
            return False
        return self.latest_checkpoint() is not None

    def check_writable(self, flag: str = "--out") -> None:
        """UserError unless the tool may write here: a new or empty folder, or one marked as a run."""
        p = self.path
        if p.exists() and not p.is_dir():
            raise UserError(f"{flag} {p} is a file, not a directory; choose a folder for the run")
        # a folder holding only the lock, or a sweep's log and job files, is a run's not yet started
        if not p.exists() or all(entry.name in (LOCK, *SWEEP) for entry in p.iterdir()) or self.is_ours():
            return
        raise UserError(
            f"{p} is not empty and not a latentquant run directory (no {MARKER}); "
            f"its files are left alone: choose a new or empty {flag}"
        )

    def acquire(self, *, new: bool, overwrite: bool = False, flag: str = "--out") -> RunDir:
        """Take the run for this process: check ownership, lock, mark.

        ``new``: a fresh run, refused when the folder already holds one (unless
        ``overwrite``, which first deletes the files of the layout, and only
        those). Otherwise (resume, evaluate) the folder must be a run already.
        """
        if not new and not self.is_ours():
            raise UserError(
                f"{flag} {self.path} is not a latentquant run directory (no {MARKER}, or no config.yaml and checkpoint)"
            )
        self.check_writable(flag)
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock()
        try:
            if new and self.holds_run():
                if not overwrite:
                    raise UserError(
                        f"{self.path} already holds a run; continue it with --resume {self.path}, "
                        f"replace it with --overwrite, or choose another {flag}"
                    )
                self.delete_run_files()
            self.mark()
        except BaseException:
            self.release()
            raise
        return self

    def mark(self) -> None:
        """Write the marker (a new run id) unless the folder has one: the folder is ours from now on."""
        self.check_writable()
        self.path.mkdir(parents=True, exist_ok=True)
        if not self.is_marked():
            atomic_write_text(self.marker, uuid.uuid4().hex + "\n")

    def holds_run(self) -> bool:
        """Whether a run's output is present (a sweep's log and job files alone are not a run)."""
        return any((self.path / name).exists() for name in (*FILES, *FOLDERS) if name not in SWEEP)

    def delete_run_files(self) -> None:
        """Delete the files of the layout, and nothing else (``--overwrite``)."""
        for name in (n for n in FILES if n not in SWEEP):
            (self.path / name).unlink(missing_ok=True)
        for name in (n for n in FOLDERS if n not in SWEEP):
            folder = self.path / name
            if folder.is_dir():
                shutil.rmtree(folder)

    # -- the lock -----------------------------------------------------------

    def _lock(self) -> None:
        import fcntl

        fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise UserError(
                f"{self.path} is in use by another latentquant process (pid {holder}); "
                "wait for it to finish or stop it first"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def release(self) -> None:
        """Release the lock (the kernel does it too when the process ends)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def is_locked(self) -> bool:
        """Whether another process holds the run now."""
        import fcntl

        if self._lock_fd is not None or not (self.path / LOCK).exists():
            return False
        fd = os.open(self.path / LOCK, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)

    # -- contents -----------------------------------------------------------

    def read_config(self):
        from latentquant.train.config import load_config

        if not self.config.is_file():
            raise UserError(f"{self.path} is not a run directory (no config.yaml)")
        return load_config(self.config)

    def write_config(self, config) -> None:
        from latentquant.train.config import save_config

        save_config(config, self.config)

    def read_eval(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.eval.read_text())
        except FileNotFoundError:
            return None
        except json.JSONDecodeError as err:
            raise UserError(f"{self.eval} is not valid JSON ({err})") from None

    def write_eval(self, scores: dict[str, Any]) -> None:
        """``eval.json`` (atomically) and one more line of ``evals.jsonl``."""
        atomic_write_text(self.eval, json.dumps(scores, indent=2) + "\n")
        with open(self.evals, "a") as f:
            f.write(json.dumps(scores) + "\n")

    def truncate_logs(self, last_step: int) -> None:
        """Drop log lines after ``last_step`` (written after the checkpoint a run resumes from)."""
        for path in (self.metrics, self.evals):
            if path.exists():
                kept = [
                    line
                    for line in path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= last_step
                ]
                atomic_write_text(path, "".join(line + "\n" for line in kept))

    def latest_checkpoint(self) -> Path | None:
        from latentquant.train.checkpoint import latest_checkpoint

        return latest_checkpoint(self.checkpoints)

    # -- status -------------------------------------------------------------

    def status(self) -> str:
        """'new', 'running' (another process holds it), 'finished' (evaluated at its
        configured step) or 'interrupted' (anything else that holds a run)."""
        if self.is_locked():
            return "running"
        if not self.config.is_file():
            return "interrupted" if self.latest_checkpoint() else "new"
        scores = self.read_eval() or {}
        steps = self.read_config().steps
        if scores.get("step") == steps:
            return "finished"
        return "interrupted" if self.latest_checkpoint() else "new"
