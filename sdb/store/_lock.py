"""One writer per run: a lock held by whoever writes a run, from opening it to closing it.

In a local store the lock is ``flock`` on ``runs/<run_id>/.writer.lock`` (the file holds the pid of
the holder, for the error message), opened without following a link: a lock file (or run folder)
planted as a symbolic link is refused, naming it, so that no store can make sdbctl truncate a file
elsewhere. The operating system drops it when the holder's process ends, however it ends (SIGKILL
included), so a dead writer never blocks the run: there is no stale lock to clean up. The lock file
is opened close-on-exec, so a command that a recording starts (``sdbctl record -- CMD``) does not
inherit it.

In an S3 store the lock is the object ``runs/<run_id>/.writer.lock``, created with a conditional PUT
(``If-None-Match: *``: only if no such object exists), which pyarrow's S3 filesystem cannot send, so
it goes through boto3 (the ``s3`` extra: ``pip install 'sdbctl[s3]'``; without it sdbctl refuses to
write to S3 rather than write unlocked), to the endpoint and with the region and credentials the
store's filesystem uses (:mod:`sdb.store._fs`). The object says who holds it (host, pid, a random
token) and since when; the server must honour conditional writes (AWS S3, MinIO and moto do).

* A second writer's create fails (412 Precondition Failed, or 409 for a concurrent one): it reads the
  object and, if its holder is alive, is refused at once with :class:`RunLocked`.
* The holder rewrites the object every :data:`sdb.store.HEARTBEAT_SECONDS` from a daemon thread,
  each time only if it is still the object it wrote (``If-Match`` its ETag): a holder that finds it
  replaced or gone has lost the lock, and its writer stops there: no part and no manifest more, the
  run left partial to the new holder, and one error line (exit 2).
* Nothing drops the object of a writer that was SIGKILLed, so a lock whose time is more than
  :data:`sdb.store._s3_lock.STALE_AFTER` heartbeats old is stale, as is, at once, one whose holder was a process of
  this same machine (boot and pid namespace) that no longer exists. A stale lock is taken over:
  deleted only if it is still the object read (``If-Match``), then created again with
  ``If-None-Match: *``; whoever loses that race is refused. The age is the object store's own: the
  object's ``LastModified`` against the ``Date`` of the reply that read it, so no host's clock (the
  holder's or the reader's, however skewed) can make a live lock look stale.
* Release deletes the object only if it is still ours (``If-Match``); a lock that cannot be
  released (the server is down) is left to go stale. A lock that is never released (its writer
  object dropped unclosed, the process exiting normally) is released then, as the OS drops a flock.

This module holds the local lock; the S3 one is :mod:`sdb.store._s3_lock` (the protocol above) over
:mod:`sdb.store._s3_client` (boto3), imported only by a writer of an S3 store.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import weakref
from typing import TYPE_CHECKING

import sdbctl.sdb.store as package
from sdbctl.sdb.errors import RunLocked
from sdbctl.sdb.store._fs import NO_FOLLOW, linked
from sdbctl.sdb.store._layout import LOCK_NAME, Store

if TYPE_CHECKING:
    from sdbctl.sdb.store._s3_lock import S3Lock


class RunLock:
    """The lock of one run, held until :meth:`release` (or until this process ends)."""

    def __init__(self, run_id: str, fd: int | None, remote: S3Lock | None = None) -> None:
        self.run_id = run_id
        self._fd = fd
        self._remote = remote
        if remote is not None:  # dropped unreleased (or at exit): released, as the OS drops a flock
            weakref.finalize(self, remote.release)

    @classmethod
    def take(cls, store: Store, run_id: str) -> RunLock:
        """Take the lock of ``run_id`` (whose directory exists), or raise :class:`RunLocked` at once
        when another process holds it. On an S3 store see the module docstring."""
        if store.loc.remote:  # its module imported here: only an S3 store's writer needs it
            from sdbctl.sdb.store._s3_lock import S3Lock

            return cls(run_id, None, S3Lock.take(store, run_id, heartbeat=package.HEARTBEAT_SECONDS))
        if sys.platform == "win32":
            return cls(run_id, None)
        import fcntl

        path = f"{store.run_dir(run_id)}/{LOCK_NAME}"
        store.loc.refuse_links(path)  # a lock planted as a link to a file elsewhere: never truncated
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | NO_FOLLOW, 0o666)
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # made a link since it was looked at
                raise linked(path) from None
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            who = f"process {holder}" if holder.isdigit() else "another process"
            raise RunLocked(
                f"run {run_id!r} in store {store.uri} is being written by {who}; one writer per run: "
                "wait for it to finish (or stop it) and try again"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        with contextlib.suppress(OSError):  # the pid is for the message of whoever comes second
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(run_id, fd)

    @property
    def lost(self) -> bool:
        """True once the holder of an S3 lock found it replaced or deleted (see the module docstring)."""
        return self._remote is not None and self._remote.lost

    def release(self) -> None:
        """Let the next writer in. Idempotent."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor drops the flock
        if self._remote is not None:
            self._remote.release()
