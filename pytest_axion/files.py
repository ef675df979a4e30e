"""Files on disk: crash-safe writes (a reader sees the old file or the new one, never half of either) and
the cache folder every part of pytest-axion keeps its reusable results in.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

TEMP_PREFIX = ".{name}."   # temp files are hidden, named after their target: readers skip them, writers clean them


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/pytest-axion`` (``~/.cache/pytest-axion`` without it): ``sha256.json`` (model hashes),
    ``limits/`` (measured machine limits), ``proxies/`` (proxy models), ``llama-tools/`` (llama.cpp's programs)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pytest-axion"


def write_json_atomically(path: Path, data: Mapping[str, Any]) -> None:
    """Write sorted, indented JSON through a temp file in the same folder, fsync and rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TEMP_PREFIX.format(name=path.name), suffix=".tmp")
    try:
        # mkstemp makes the file private (0600); a baseline or report is a shared file like any other.
        os.fchmod(fd, _mode_for(path))
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, sort_keys=True, allow_nan=False)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


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
