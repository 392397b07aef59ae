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
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path


class LockedError(RuntimeError):
    """Another process holds the lock; the message names the lock, what it guards and the holder."""


@contextlib.contextmanager
def exclusive(lock_file: Path, what: str) -> Iterator[None]:
    """Hold ``lock_file`` for the block, or raise LockedError at once (never wait silently)."""
    try:
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise LockedError(f"{lock_file}: cannot create the lock for {what} ({exc.strerror})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 400, 0).decode(errors="replace").strip() or "another process"
            raise LockedError(f"{lock_file}: {what} is in use by {holder}; wait for it to finish "
                              "(the lock goes when that process ends, even if it is killed)") from None
        command = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))[:200]
        holder = (f"pid {os.getpid()} on {socket.gethostname()} ({command}), "
                  f"since {datetime.now(timezone.utc).isoformat(timespec='seconds')}")
        os.ftruncate(fd, 0)
        os.pwrite(fd, holder.encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the flock
