"""The run directory: its layout, ownership, lock and status, in one place.

    OUT/
      .latentquant-run    the marker, written first: the run id (and "kind: demo" for a demo run);
                          only a marked folder is ours
      .latentquant-lock   held (flock) by the process writing the run; holds its pid
      config.yaml         the resolved config
      metrics.jsonl       one JSON line per logged step
      eval.json           the last evaluation; evals.jsonl: every evaluation
      checkpoints/        step_<step>.safetensors (each records the run id)
      figures/            PNGs of the last evaluation (FIGURES)
      report.md           one page linking all of the above
      tensorboard/        when the tensorboard package is installed
      train.log, jobs/    a sweep's log of the run, and its launcher's job files

Rules (docs/training.md, "Whose files"): the tool writes into a folder only
when it is new, empty or marked as a run; ``overwrite`` deletes only the
files of the layout above, by their names (``RunDir.delete_run_files``),
never anything else in the folder or its subfolders, and names what it kept;
one process at a time holds a run (``fcntl.flock``, released by the kernel
when the process ends, however it ends, so a lock is never stale); a
checkpoint belongs to the run whose id it records, and to the config.yaml it
was written under (``RunDir.check_checkpoint``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

from latentquant._atomic import atomic_write_text
from latentquant.train.checkpoint import latest_checkpoint
from latentquant.train.config import RUNTIME_FIELDS, TrainConfig, load_config, save_config
from latentquant.validation import UserError, check_choice

MARKER = ".latentquant-run"
LOCK = ".latentquant-lock"
FILES = ("config.yaml", "metrics.jsonl", "eval.json", "evals.jsonl", "report.md", "train.log")
FOLDERS = ("checkpoints", "figures", "tensorboard", "wandb", "jobs")
SWEEP = ("train.log", "jobs")  # a sweep's own files: not a run's output, kept by --overwrite
# what the tool writes inside its folders, by name (glob patterns); --overwrite deletes these only
FIGURES = ("reconstructions.png", "traversals.png", "nmi.png", "usage.png", "samples.png")
FOLDER_FILES = {
    "checkpoints": ("step_*.safetensors", ".step_*.safetensors.*.tmp"),
    "figures": (*FIGURES, ".*.png.*.tmp"),
    "tensorboard": ("events.out.tfevents.*",),
    "wandb": ("run_id",),  # wandb's own files (its copy of the run) are wandb's: kept
}
KINDS = ("train", "demo")


class RunDir:
    """A run directory: paths of its files, its marker and lock, and its status.

    Constructing one touches nothing on disk. ``train`` acquires the folder
    (checks it is a run's or empty, writes the marker, takes the lock) before
    it writes anything; the properties name the files a run keeps:
    ``config``, ``metrics``, ``eval``, ``evals``, ``report``, ``checkpoints``,
    ``figures``, ``tensorboard``, ``log`` and ``marker``.

    Parameters
    ----------
    path : str or os.PathLike
        The folder (``--out``); it need not exist.

    Raises
    ------
    latentquant.validation.UserError
        A ``ValueError``, for an empty path.

    Examples
    --------
    >>> from latentquant.train import RunDir
    >>> run = RunDir("runs/q")
    >>> run.config.as_posix(), run.eval.as_posix()
    ('runs/q/config.yaml', 'runs/q/eval.json')
    >>> run.status(), run.latest_checkpoint()
    ('new', None)
    """

    def __init__(self, path: str | os.PathLike):
        if str(path).strip() == "":
            raise UserError("--out is empty; name a run directory, e.g. --out runs/q")
        self.path = Path(path)
        self._lock_fd: int | None = None
        self.kept: list[str] = []  # files --overwrite kept (acquire), relative to the folder

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

    def acquire(self, *, new: bool, overwrite: bool = False, kind: str | None = None, flag: str = "--out") -> RunDir:
        """Take the run for this process: check ownership, lock, mark.

        ``new``: a fresh run, refused when the folder already holds one (unless
        ``overwrite``, which first deletes the files of the layout, and only
        those, and names the others in ``self.kept``); the new run gets a new run
        id. Otherwise (resume, evaluate) the folder must be a run already.
        ``kind`` (``"train"``, ``"demo"``; None: leave the marker's) is recorded in
        the marker; a ``"demo"`` overwrites only a run that is a demo run too, and
        a resumed demo run (kind ``"train"``) is the user's from then on.
        """
        if not new and not self.is_ours():
            raise UserError(
                f"{flag} {self.path} is not a latentquant run directory (no {MARKER}, or no config.yaml and checkpoint)"
            )
        self.check_writable(flag)
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock()
        if kind is not None:
            check_choice("kind", kind, KINDS)
        try:
            if new and self.holds_run():
                if kind == "demo" and self.kind() != "demo":
                    raise UserError(
                        f"{self.path} holds a training run that is not a demo run; the demo replaces only its "
                        f"own runs: choose another --out (continue that run with latentquant train --resume "
                        f"{self.path}, or replace it with latentquant train ... --out {self.path} --overwrite)"
                    )
                if not overwrite:
                    raise UserError(
                        f"{self.path} already holds a run; continue it with --resume {self.path}, "
                        f"replace it with --overwrite, or choose another {flag}"
                    )
                self.kept = self.delete_run_files()
            self.mark(kind, renew=new)  # a new run, a new id: no checkpoint of an earlier one is its own
        except BaseException:
            self.release()
            raise
        return self

    def mark(self, kind: str | None = None, renew: bool = False) -> None:
        """Write the marker unless the folder has one: the folder is ours from now on.

        The marker holds a new run id (and ``kind: demo`` for a demo run); ``renew``
        gives the folder a new run id (a new run replacing the old one); ``kind``
        changes the recorded kind of an existing marker."""
        self.check_writable()
        self.path.mkdir(parents=True, exist_ok=True)
        if self.is_marked() and not renew:
            if kind is None or kind == self.kind():
                return
            run_id = self.run_id()
        else:
            run_id = uuid.uuid4().hex
        kind = kind or (self.kind() if self.is_marked() else "train")
        atomic_write_text(self.marker, run_id + "\n" + ("kind: demo\n" if kind == "demo" else ""))

    def run_id(self) -> str | None:
        """The run id of the marker (None for an unmarked run, one written before markers existed)."""
        try:
            lines = self.marker.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            return None
        return lines[0].strip() if lines else None

    def kind(self) -> str | None:
        """``"demo"`` for a run started by ``latentquant demo``, ``"train"`` for any other
        run (an unmarked run too); None when the folder holds no marker and no run."""
        try:
            text = self.marker.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return "train" if self.is_ours() else None
        return "demo" if "kind: demo" in text.splitlines()[1:] else "train"

    def holds_run(self) -> bool:
        """Whether a run's output is present (a sweep's log and job files alone are not a run)."""
        return any((self.path / name).exists() for name in (*FILES, *FOLDERS) if name not in SWEEP)

    def delete_run_files(self) -> list[str]:
        """Delete the files the tool writes, by their names (``FILES``, ``FOLDER_FILES``),
        and nothing else (``--overwrite``); a folder left empty is removed. Returns the
        other files of the folder, kept (paths relative to it), for the caller to name."""
        for name in (n for n in FILES if n not in SWEEP):
            (self.path / name).unlink(missing_ok=True)
        for name, patterns in FOLDER_FILES.items():
            folder = self.path / name
            if not folder.is_dir() or folder.is_symlink():
                continue
            for pattern in patterns:
                for path in folder.glob(pattern):
                    if path.is_file() or path.is_symlink():
                        path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # removed only when empty
                folder.rmdir()
        own = {MARKER, LOCK, *SWEEP}
        kept = []
        for path in sorted(self.path.rglob("*")):
            rel = path.relative_to(self.path)
            if rel.parts[0] not in own and not path.is_dir():
                kept.append(rel.as_posix())
        return kept

    def check_checkpoint(self, path: Path, doc: dict[str, Any]) -> TrainConfig:
        """The run's config, once the checkpoint ``path`` (its state document ``doc``) is
        found to be this run's: written by this run (the run id it records is the
        marker's) under this config.yaml (the same settings, how the run ran and its
        steps aside). The one rule of ``--resume`` and ``latentquant evaluate``."""
        saved = self.read_config()
        recorded_id, run_id = doc.get("run_id"), self.run_id()
        if recorded_id is not None and run_id is not None and recorded_id != run_id:
            raise UserError(
                f"{path} was written by another run (run id {str(recorded_id)[:8]}..., this run is "
                f"{run_id[:8]}...); use a checkpoint of {self.path}"
            )
        try:
            recorded = TrainConfig.from_dict(doc.get("config") or {}, source=f"{path} (its config)")
        except (ValueError, TypeError) as err:
            raise UserError(f"{path}: unreadable config in the checkpoint ({err})") from None
        changed = recorded.differences(saved, ignore=RUNTIME_FIELDS + ("steps",))
        if changed:
            shown = ", ".join(f"{k} {a!r} (the run has {b!r})" for k, (a, b) in changed.items())
            raise UserError(
                f"{path} was written by another run: {shown}; its config.yaml was changed after the checkpoint, "
                f"or the checkpoint is another run's: restore {self.config} or choose another checkpoint"
            )
        return saved

    # -- the lock -----------------------------------------------------------

    def _lock(self) -> None:
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

    def read_config(self) -> TrainConfig:
        """The run's ``config.yaml``; UserError when it is missing, empty or unreadable."""
        if not self.config.is_file():
            raise UserError(f"{self.path} is not a run directory (no config.yaml)")
        if not self.config.read_bytes().strip():
            raise UserError(
                f"{self.config} is empty; a run's config.yaml holds its resolved config "
                "(restore it, e.g. from a copy of the run)"
            )
        return load_config(self.config)

    def write_config(self, config: TrainConfig) -> None:
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

    def insert_eval(self, scores: dict[str, Any]) -> None:
        """Put ``scores`` into ``evals.jsonl`` in step order, replacing a record of the same
        step (an atomic rewrite: the file is whole before and after); ``eval.json`` is left alone."""
        records = read_jsonl(self.evals) if self.evals.exists() else []
        records = [r for r in records if r.get("step") != scores["step"]] + [scores]
        records.sort(key=lambda r: r.get("step", 0))
        atomic_write_text(self.evals, "".join(json.dumps(r) + "\n" for r in records))

    def truncate_logs(self, last_step: int) -> None:
        """Drop log lines after ``last_step`` (written after the checkpoint a run resumes from).

        A torn last line (what a crash or a full disk leaves mid-append) is dropped, and
        said; damage anywhere else is a UserError naming the file and line. Both files
        are read and checked before either is rewritten."""
        kept = {path: read_jsonl(path) for path in (self.metrics, self.evals) if path.exists()}
        for path, records in kept.items():
            lines = [json.dumps(r) for r in records if r.get("step", 0) <= last_step]
            atomic_write_text(path, "".join(line + "\n" for line in lines))

    def latest_checkpoint(self) -> Path | None:
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


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a run's JSON-lines file (``metrics.jsonl``, ``evals.jsonl``).

    Each line is a JSON object with an integer ``step``. A last line that does not
    read as one is torn (a crash or a full disk mid-append): it is dropped, with a
    note on stderr. A bad line anywhere else is a UserError naming the file and line."""
    text = path.read_bytes().decode("utf-8", errors="replace")
    lines = text.split("\n")
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or isinstance(record.get("step"), bool):
                raise ValueError
            if not isinstance(record.get("step", 0), int):
                raise ValueError
        except ValueError:
            if all(not rest.strip() for rest in lines[number:]):
                print(
                    f"latentquant: dropped the torn last line of {path} (line {number}, {line[:40]!r})", file=sys.stderr
                )
                break
            raise UserError(
                f"{path}: line {number} is not a JSON record with an integer step ({line[:60]!r}); "
                "mend or remove that line to resume"
            ) from None
        records.append(record)
    return records
