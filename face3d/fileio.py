"""Writing files atomically, for the whole project (checkpoints, fit files, options, lists),
and cleaning up after writers that were killed.

Here because face3d is the bottom layer: it imports nothing else of the project, while
util, data, models and the entry points import it.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import time
import uuid

TEMP_PREFIX = ".tmp_"
# A temp file lives for the seconds a write takes; one this old whose writer cannot be
# checked (another machine on a shared disk, or an older version's name) is abandoned.
ABANDONED_AFTER_S = 3600


def _host() -> str:
    return socket.gethostname().replace("~", "-") or "host"


def temp_path_for(path: str) -> str:
    """``<folder>/.tmp_<name>~<host>~<pid>~<random>``: hidden, no extension (nothing that lists
    photos or fits picks it up), and naming its writer so a later run can tell whether that
    writer is gone (:func:`remove_stale_temps`)."""
    folder, name = os.path.split(path)
    return os.path.join(folder, f"{TEMP_PREFIX}{name}~{_host()}~{os.getpid()}~"
                                f"{uuid.uuid4().hex[:12]}")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **open_kwargs):
    """``with atomic_write(path, "wb") as f: ...`` writes to a temp file in the same folder
    and renames it onto ``path`` only when the block succeeds, so a crash or Ctrl-C
    mid-write leaves the previous file (or none), never a truncated one. An exception
    (a full disk ...) removes the temp file; a kill -9 leaves it, for
    :func:`remove_stale_temps` of the next run.

    The file gets the mode a plain ``open(path, "w")`` would give (0o666 less the umask):
    ``tempfile.mkstemp``'s files are private (0o600), and the rename would keep that.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = temp_path_for(os.path.join(folder, os.path.basename(path)))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


_OURS = re.compile(r"\.tmp_.+~(?P<host>[^~]+)~(?P<pid>\d+)~[0-9a-f]{12}")
_OLDER_VERSION = re.compile(r"\.tmp_.+\.[0-9a-f]{12}")


def _writer_gone(name: str, age_s: float) -> bool:
    """Whether the temp file ``name`` of :func:`atomic_write` was left by a dead writer.
    Files that are not named like ours are never touched."""
    m = _OURS.fullmatch(name)
    if m is None or m["host"] != _host():
        # an older version's name, or another machine's on a shared disk: no pid to check
        return (m is not None or _OLDER_VERSION.fullmatch(name) is not None) and \
            age_s > ABANDONED_AFTER_S
    pid = int(m["pid"])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's
        return False
    return False


def remove_stale_temps(folder: str, recursive: bool = True) -> int:
    """Delete the temp files of :func:`atomic_write` under ``folder`` whose writer is dead
    (killed mid-write); those of live writers (another shard writing into the same folder)
    are kept. Returns how many were removed."""
    removed = 0
    now = time.time()
    stack = [folder]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for e in entries:
            if e.name.startswith(TEMP_PREFIX):
                try:
                    if e.is_file(follow_symlinks=False) and _writer_gone(
                            e.name, now - e.stat(follow_symlinks=False).st_mtime):
                        os.unlink(e.path)
                        removed += 1
                except OSError:
                    pass  # gone meanwhile, or not ours to delete
            elif recursive and e.is_dir(follow_symlinks=False):
                stack.append(e.path)
    return removed
