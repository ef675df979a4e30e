"""Files on disk: crash-safe writes (a reader sees the old file or the new one, never half of either) and
the cache folder every part of pytest-axion keeps its reusable results in.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

TEMP_PREFIX = ".{name}."   # temp files are hidden, named after their target: readers skip them, writers clean them


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/pytest-axion`` (``~/.cache/pytest-axion`` without it): ``sha256.json`` (model hashes),
    ``limits/`` (measured machine limits), ``proxies/`` (proxy models), ``llama-tools/`` (llama.cpp's programs)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pytest-axion"


@contextlib.contextmanager
def written_atomically(path: Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """A handle whose contents replace ``path`` whole when the block ends: a temp file in the same folder, fsync
    and rename; if the block raises, nothing is left and ``path`` is as it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TEMP_PREFIX.format(name=path.name), suffix=".tmp")
    try:
        # mkstemp makes the file private (0600); a baseline, report or cached file is shared like any other.
        os.fchmod(fd, _mode_for(path))
        with open(fd, mode, encoding=None if "b" in mode else "utf-8") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def write_json_atomically(path: Path, data: Mapping[str, Any]) -> None:
    """Write sorted, indented JSON through a temp file in the same folder, fsync and rename."""
    with written_atomically(path, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=True, allow_nan=False)
        handle.write("\n")


def _mode_for(path: Path) -> int:
    """The replaced file's mode, or what a plain open() would give (0666 less the umask)."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (where the file system can)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # not every file system supports fsync on directories
    finally:
        os.close(fd)
