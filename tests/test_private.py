"""This user's private folder for locks: created private, checked every time, symlinks never followed."""

import multiprocessing
import os
import sys
import tempfile
import time

import pytest

from pytest_axion.store.baselines import lock_path, update_baseline
from pytest_axion.store.private import LockTimeout, PrivateFolderError, file_lock, private_dir

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions and flock")


@pytest.fixture
def temp_root(tmp_path, monkeypatch):
    """A temp dir of the test's own, as TMPDIR would give it, and no session runtime folder."""
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def test_the_folder_is_made_private_to_this_user_and_reused(temp_root):
    folder = private_dir()
    assert folder == temp_root / f"pytest-axion-{os.geteuid()}"
    assert folder.stat().st_mode & 0o777 == 0o700 and folder.stat().st_uid == os.geteuid()
    assert private_dir() == folder


def test_a_session_runtime_folder_is_used_when_it_is_private(tmp_path, monkeypatch):
    runtime = tmp_path / "run-user"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    assert private_dir() == runtime / "pytest-axion"
    runtime.chmod(0o755)   # a runtime folder others can read is not trusted: the temp dir's own is used
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert private_dir() == tmp_path / f"pytest-axion-{os.geteuid()}"


@pytest.mark.parametrize("plant, says", [
    ("open", "is open to other users (mode 777)"),
    ("symlink", "is a symlink"),
    ("file", "is not a folder"),
    ("other owner", "belongs to another user"),
])
def test_a_folder_another_user_could_control_is_refused_in_one_line(temp_root, monkeypatch, plant, says):
    folder = temp_root / f"pytest-axion-{os.geteuid()}"
    if plant == "open":
        folder.mkdir()
        folder.chmod(0o777)
    elif plant == "symlink":
        (temp_root / "elsewhere").mkdir(mode=0o700)
        folder.symlink_to(temp_root / "elsewhere")
    elif plant == "file":
        folder.write_text("")
    else:
        folder.mkdir(mode=0o700)
        real = os.geteuid()
        monkeypatch.setattr(os, "geteuid", lambda: real + 1)
        folder = temp_root / f"pytest-axion-{real + 1}"
        folder.mkdir(mode=0o700)
    with pytest.raises(PrivateFolderError) as err:
        private_dir()
    message = str(err.value)
    assert "\n" not in message and says in message and str(folder) in message and "TMPDIR" in message


def test_a_lock_name_planted_as_a_symlink_is_refused_and_its_target_untouched(temp_root):
    victim = temp_root / "precious.txt"
    victim.write_text("keep me")
    planted = private_dir() / "some.lock"
    planted.symlink_to(victim)
    with pytest.raises(PrivateFolderError, match="is a symlink, which pytest-axion never follows"), file_lock(planted):
        pass
    assert victim.read_text() == "keep me" and planted.is_symlink()


def test_a_baseline_write_behind_a_planted_lock_writes_nothing(temp_root, tmp_path):
    baseline = tmp_path / "baselines" / "hw" / "model.json"
    victim = temp_root / "precious.txt"
    victim.write_text("keep me")
    lock_path(baseline).symlink_to(victim)
    with pytest.raises(PrivateFolderError):
        update_baseline(baseline, lambda current: pytest.fail("nothing may be read or written"))
    assert victim.read_text() == "keep me" and not baseline.exists()


def _hold(path, seconds):
    with file_lock(path):
        time.sleep(seconds)


def test_a_lock_held_elsewhere_times_out_in_one_line_and_is_free_once_its_holder_dies(temp_root):
    path = private_dir() / "held.lock"
    holder = multiprocessing.get_context("fork").Process(target=_hold, args=(path, 30))
    holder.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:   # until the holder has it
            try:
                with file_lock(path, timeout_s=0):
                    time.sleep(0.05)
            except LockTimeout:
                break
        with pytest.raises(LockTimeout, match=f"lock {path} is held by another process for over 0 s"), \
                file_lock(path, timeout_s=0.2):
            pass
    finally:
        holder.kill()
        holder.join()
    with file_lock(path, timeout_s=5):   # the OS released it with the holder
        pass
    assert path.stat().st_mode & 0o777 == 0o600


def test_shared_holders_share_and_exclude_an_exclusive_one(temp_root):
    path = private_dir() / "shared.lock"
    with file_lock(path, shared=True), file_lock(path, shared=True, timeout_s=0), pytest.raises(LockTimeout), \
            file_lock(path, timeout_s=0.1):
        pass
