"""Writing files atomically, for the whole project (checkpoints, fit files, options, lists).

Here because face3d is the bottom layer: it imports nothing else of the project, while
util, data, models and the entry points import it.
"""

from __future__ import annotations

import contextlib
import os
import uuid


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **open_kwargs):
    """``with atomic_write(path, "wb") as f: ...`` writes to a temp file in the same folder
    and renames it onto ``path`` only when the block succeeds, so a crash or Ctrl-C
    mid-write leaves the previous file (or none), never a truncated one, and no temp file.

    The file gets the mode a plain ``open(path, "w")`` would give (0o666 less the umask):
    ``tempfile.mkstemp``'s files are private (0o600), and the rename would keep that.
    The temp name (``.tmp_<name>.<random>``) is hidden and keeps no extension, so nothing
    that lists photos or fits picks up a half-written file.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".tmp_{os.path.basename(path)}.{uuid.uuid4().hex[:12]}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
