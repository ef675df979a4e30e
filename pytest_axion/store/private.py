"""This user's private run folder, and the locks in it: nothing another local user can see, plant or hold.

Shared CI hosts run several users' jobs. Lock files in a world-writable folder with guessable names let
another user lock a run out, or plant a lock name as a symlink to one of the victim's files (opening it
would then create or truncate that file). So every lock and run file lives in a folder that belongs to
this user alone (mode 0700, owned by the effective user, not a symlink: checked, never assumed), and a
lock file is opened without following symlinks. No pytest imports.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from pytest_axion.errors import AxionError

try:
    import fcntl
except ImportError:  # Windows: no other local users' symlinks to fear in the same way; filelock serves
    fcntl = None  # type: ignore[assignment]

FOLDER_MODE = 0o700
LOCK_POLL_S = 0.05


class PrivateFolderError(AxionError):
    """The private folder or a lock in it is unsafe (another owner, open to others, a symlink) or unwritable."""


class LockTimeout(AxionError):
    """A lock stayed held by another process for longer than allowed."""


def private_dir(base: str | os.PathLike[str] | None = None) -> Path:
    """This user's private folder for locks and run files, created if needed and checked every time.

    ``$XDG_RUNTIME_DIR/pytest-axion`` where the session manager made that folder (it is private already),
    else ``<temp dir>/pytest-axion-<uid>``; ``base`` replaces the temp dir (tests).
    """
    if base is None and os.environ.get("XDG_RUNTIME_DIR") and _is_private(Path(os.environ["XDG_RUNTIME_DIR"])):
        folder = Path(os.environ["XDG_RUNTIME_DIR"]) / "pytest-axion"
    else:
        folder = Path(base or tempfile.gettempdir()) / f"pytest-axion-{_uid()}"
    try:
        folder.mkdir(mode=FOLDER_MODE, exist_ok=True)
    except FileExistsError:
        pass   # something else under that name: examined below
    except OSError as err:
        raise PrivateFolderError(f"cannot create pytest-axion's private folder {folder}: {err.strerror or err}: "
                                 "point TMPDIR at a writable folder of your own") from None
    problem = _unsafe(folder)
    if problem:
        raise PrivateFolderError(f"pytest-axion's private folder {folder} {problem}, so another local user could "
                                 "lock you out or redirect its lock files: remove it (it holds only locks), or "
                                 "point TMPDIR at a folder of your own")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PrivateFolderError(f"pytest-axion's private folder {folder} is not writable: fix its permissions, or "
                                 "point TMPDIR at a writable folder of your own")
    return folder


def _uid() -> int:
    return os.geteuid() if hasattr(os, "geteuid") else 0


def _unsafe(folder: Path) -> str | None:
    """Why ``folder`` is not this user's alone, or None."""
    try:
        info = os.lstat(folder)
    except OSError as err:
        return f"cannot be examined ({err.strerror or err})"
    if stat.S_ISLNK(info.st_mode):
        return "is a symlink"
    if not stat.S_ISDIR(info.st_mode):
        return "is not a folder"
    if hasattr(os, "geteuid") and info.st_uid != os.geteuid():
        return f"belongs to another user (uid {info.st_uid})"
    if os.name == "posix" and info.st_mode & 0o077:
        return f"is open to other users (mode {stat.S_IMODE(info.st_mode):o})"
    return None


def _is_private(folder: Path) -> bool:
    return _unsafe(folder) is None


@contextlib.contextmanager
def file_lock(path: Path, *, shared: bool = False, timeout_s: float | None = None) -> Iterator[None]:
    """Hold an flock on ``path`` (created 0600 if missing, never through a symlink) until the block ends.

    ``timeout_s`` None waits for ever; otherwise :class:`LockTimeout` once it has passed. The OS releases
    the lock when its holder dies, so a crashed process never leaves one held. The file is never deleted
    while the lock may be wanted (deleting a lock file another process is about to lock is a race).
    """
    if fcntl is None:
        from filelock import FileLock, Timeout

        try:
            with FileLock(str(path), timeout=-1 if timeout_s is None else timeout_s):
                yield
        except Timeout:
            raise LockTimeout(f"lock {path} is held by another process for over {timeout_s:.0f} s") from None
        return
    fd = _open_lock_file(path)
    try:
        mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        if deadline is None:
            fcntl.flock(fd, mode)
        else:
            while True:
                try:
                    fcntl.flock(fd, mode | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise LockTimeout(f"lock {path} is held by another process for over {timeout_s:.0f} s") \
                            from None
                    time.sleep(LOCK_POLL_S)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _open_lock_file(path: Path) -> int:
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise PrivateFolderError(f"lock file {path} is a symlink, which pytest-axion never follows (someone "
                                     "planted it): remove it; nothing it points to was touched") from None
        raise PrivateFolderError(f"cannot open lock file {path}: {err.strerror or err}: check the folder's "
                                 "permissions, or point TMPDIR at a folder of your own") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or (hasattr(os, "geteuid") and info.st_uid != os.geteuid()):
        os.close(fd)
        raise PrivateFolderError(f"lock file {path} is not a regular file of yours: remove it")
    return fd
