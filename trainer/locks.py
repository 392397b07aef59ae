"""One writer at a time per artifact: an advisory lock that names who holds it.

``fcntl.flock`` is released by the kernel when its process ends, however it ends, so a lock left by a
crash or a kill is never stale. The lock file keeps the holder's pid, command and start time only to tell
a second writer who it is waiting for. Imports no TensorFlow.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

# Lock files this process holds, by real path, with how deeply they are nested: flock conflicts between two open
# files of one process too, so the command line can take a model's lock and train_one take it again inside.
_HELD: dict[str, int] = {}
_POLL_S = 0.05


class LockedError(RuntimeError):
    """Another process holds the lock; the message names the lock, what it guards and the holder."""


@contextlib.contextmanager
def exclusive(lock_file: Path, what: str, wait_s: float = 0.0) -> Iterator[None]:
    """Hold ``lock_file`` for the block, or raise LockedError naming the holder.

    ``wait_s`` = 0 refuses at once: a second training run must not wait silently for hours. A short wait
    suits locks held for milliseconds (a table being rewritten), where refusing would lose a finished run.
    """
    key = os.path.realpath(lock_file)
    if key in _HELD:  # an outer block of this process holds it already
        _HELD[key] += 1
        try:
            yield
        finally:
            _HELD[key] -= 1
        return
    try:
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise LockedError(f"{lock_file}: cannot create the lock for {what} ({exc.strerror})") from None
    try:
        _acquire(fd, time.monotonic() + wait_s, f"{lock_file}: {what}")
        command = " ".join([os.path.basename(sys.argv[0]), *sys.argv[1:]])[:200] if sys.argv else ""
        os.ftruncate(fd, 0)
        os.pwrite(fd, (f"pid {os.getpid()} on {socket.gethostname()} ({command}), "
                       f"since {datetime.now(timezone.utc).isoformat(timespec='seconds')}").encode(), 0)
        _HELD[key] = 1  # counted once held, not while waiting for it
        try:
            yield
        finally:
            del _HELD[key]
    finally:
        os.close(fd)  # releases the flock


def _acquire(fd: int, deadline: float, what: str) -> None:
    while True:
        try:
            return fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if time.monotonic() >= deadline:
                holder = os.pread(fd, 400, 0).decode(errors="replace").strip() or "another process"
                raise LockedError(f"{what} is in use by {holder}; wait for it to finish "
                                  "(the lock goes when that process ends, even if it is killed)") from None
            time.sleep(_POLL_S)
