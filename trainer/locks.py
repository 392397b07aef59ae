"""One writer at a time per artifact: an advisory lock that names who holds it.

``fcntl.flock`` is released by the kernel when its process ends, however it ends, so a lock left by a
crash or a kill is never stale: the next command simply gets it. The lock file keeps the holder's
pid, command and start time only to tell a second writer who it is waiting for. Imports no TensorFlow.
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

# Lock files this process holds, by real path, with how deeply they are nested. flock conflicts between two
# open files of one process too, so the command line can take a model's lock before loading the data and
# train_one can take it again inside without locking itself out.
_HELD: dict[str, int] = {}
_POLL_S = 0.05


class LockedError(RuntimeError):
    """Another process holds the lock; the message names the lock, what it guards and the holder."""


@contextlib.contextmanager
def exclusive(lock_file: Path, what: str, wait_s: float = 0.0) -> Iterator[None]:
    """Hold ``lock_file`` for the block, or raise LockedError naming the holder.

    ``wait_s`` = 0 (the default) refuses at once: a second training run must not wait silently for
    hours. A short ``wait_s`` suits locks held for milliseconds (a table being rewritten), where
    refusing would throw away a finished run's result for a collision.
    """
    key = os.path.realpath(lock_file)
    if key in _HELD:  # this process holds it already (an outer block of the same command)
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
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(_POLL_S)
                    continue
                holder = os.pread(fd, 400, 0).decode(errors="replace").strip() or "another process"
                raise LockedError(f"{lock_file}: {what} is in use by {holder}; wait for it to finish "
                                  "(the lock goes when that process ends, even if it is killed)") from None
        command = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))[:200]
        holder = (f"pid {os.getpid()} on {socket.gethostname()} ({command}), "
                  f"since {datetime.now(timezone.utc).isoformat(timespec='seconds')}")
        os.ftruncate(fd, 0)
        os.pwrite(fd, holder.encode(), 0)
        _HELD[key] = 1
        try:
            yield
        finally:
            del _HELD[key]
    finally:
        os.close(fd)  # releases the flock
