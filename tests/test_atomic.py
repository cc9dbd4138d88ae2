import numpy as np
import pytest

from latentquant._atomic import atomic_open, atomic_path, atomic_write_bytes, atomic_write_text


def test_write_replaces_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "a.json"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in target.parent.iterdir()] == ["a.json"]


def test_failure_keeps_the_old_file_and_removes_the_temp(tmp_path):
    target = tmp_path / "ckpt.bin"
    atomic_write_bytes(target, b"good")
    with pytest.raises(KeyboardInterrupt), atomic_open(target, "wb") as handle:
        handle.write(b"half")
        raise KeyboardInterrupt
    assert target.read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.bin"]


def test_atomic_path_for_writers_that_take_a_path(tmp_path):
    target = tmp_path / "x.npy"
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp != target
        with open(tmp, "wb") as handle:  # np.save(path) would append .npy to the temp name
            np.save(handle, np.arange(3))
    assert np.load(target).tolist() == [0, 1, 2]


def test_atomic_open_rejects_read_modes(tmp_path):
    with pytest.raises(ValueError, match="mode must start with 'w'"), atomic_open(tmp_path / "f", "r"):
        pass


def test_permissions_follow_the_umask_like_a_plain_open(tmp_path):
    plain, atomic = tmp_path / "plain", tmp_path / "atomic"
    plain.write_text("x")
    atomic_write_text(atomic, "x")
    assert (atomic.stat().st_mode & 0o777) == (plain.stat().st_mode & 0o777)


@pytest.mark.parametrize("where", ["write", "fsync", "create"])
def test_a_failed_write_names_the_destination_not_the_temporary_file(tmp_path, monkeypatch, where):
    import errno

    from latentquant import _atomic

    target = tmp_path / "eval.json"

    def full(path, *args, **kwargs):  # what the OS says: the file it was writing, the temporary one
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    if where == "fsync":
        monkeypatch.setattr(_atomic, "_fsync", full)
    elif where == "create":
        monkeypatch.setattr(_atomic.os, "open", full)
    with pytest.raises(OSError) as err, atomic_path(target) as tmp:
        if where == "write":
            full(tmp)
    assert err.value.filename == str(target) and err.value.errno == errno.ENOSPC
    assert str(target) in str(err.value) and ".tmp" not in str(err.value)
    assert list(tmp_path.iterdir()) == []
