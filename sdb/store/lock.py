"""One writer per run: a lock held by whoever writes a run, from opening it to closing it.

In a local store the lock is ``flock`` on ``runs/<run_id>/.writer.lock`` (the file holds the pid of
the holder, for the error message). The operating system drops it when the holder's process ends,
however it ends (SIGKILL included), so a dead writer never blocks the run: there is no stale lock
to clean up. The lock file is opened close-on-exec, so a command that a recording starts
(``sdbctl record -- CMD``) does not inherit it.

In an S3 store the lock is the object ``runs/<run_id>/.writer.lock``, created with a conditional PUT
(``If-None-Match: *``: only if no such object exists), which pyarrow's S3 filesystem cannot send, so
it goes through boto3 (the ``s3`` extra: ``pip install 'sdbctl[s3]'``; without it sdbctl refuses to
write to S3 rather than write unlocked), to the endpoint and with the region and credentials the
store's filesystem uses (:mod:`sdb.store.fs`). The object says who holds it (host, pid, a random
token) and since when; the server must honour conditional writes (AWS S3, MinIO and moto do).

* A second writer's create fails (412 Precondition Failed, or 409 for a concurrent one): it reads the
  object and, if its holder is alive, is refused at once with :class:`RunLocked`.
* The holder rewrites the object every :data:`HEARTBEAT_SECONDS` from a daemon thread, each time
  only if it is still the object it wrote (``If-Match`` its ETag): a holder that finds it replaced
  or gone has lost the lock, and says so once on stderr.
* Nothing drops the object of a writer that was SIGKILLed, so a lock whose time is more than
  :data:`STALE_AFTER` heartbeats old is stale, as is, at once, one whose holder was a process of
  this same machine (boot and pid namespace) that no longer exists. A stale lock is taken over:
  deleted only if it is still the object read (``If-Match``), then created again with
  ``If-None-Match: *``; whoever loses that race is refused. The time is the holder's clock, read
  with the new writer's, so the clocks of two hosts may differ by up to two heartbeats.
* Release deletes the object only if it is still ours (``If-Match``); a lock that cannot be
  released (the server is down) is left to go stale. A lock that is never released (its writer
  object dropped unclosed, the process exiting normally) is released then, as the OS drops a flock.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib
import json
import logging
import os
import random
import secrets
import socket
import sys
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

from sdbctl.sdb.errors import SdbError
from sdbctl.sdb.store.fs import retry_budget, s3_endpoint
from sdbctl.sdb.store.layout import Store

LOCK_NAME: Final = ".writer.lock"
HEARTBEAT_SECONDS: float = 10.0  # how often the holder of an S3 lock rewrites it (read when a lock is taken)
STALE_AFTER: Final = 3  # heartbeats an S3 lock may miss before it counts as its holder's, dead
INSTALL_HINT: Final = "pip install 'sdbctl[s3]'"
_CONFLICT: Final = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "412", "409"})
_MISSING: Final = frozenset({"NoSuchKey", "404", "NotFound"})
_UNSUPPORTED: Final = frozenset({"NotImplemented", "501"})
_THROTTLED: Final = frozenset({"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError"})
_log = logging.getLogger(__name__)
T = TypeVar("T")


class RunLocked(SdbError):
    """Another process is writing that run."""


class RunLock:
    """The lock of one run, held until :meth:`release` (or until this process ends)."""

    def __init__(self, run_id: str, fd: int | None, remote: _S3Lock | None = None) -> None:
        self.run_id = run_id
        self._fd = fd
        self._remote = remote
        if remote is not None:  # dropped unreleased (or at exit): released, as the OS drops a flock
            weakref.finalize(self, remote.release)

    @classmethod
    def take(cls, store: Store, run_id: str) -> RunLock:
        """Take the lock of ``run_id`` (whose directory exists), or raise :class:`RunLocked` at once
        when another process holds it. On an S3 store see the module docstring."""
        if store.loc.remote:
            return cls(run_id, None, _S3Lock.take(store, run_id))
        if sys.platform == "win32":
            return cls(run_id, None)
        import fcntl

        path = f"{store.run_dir(run_id)}/{LOCK_NAME}"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
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


# -- S3 ----------------------------------------------------------------------------------------------


def _machine() -> str | None:
    """This boot of this machine and this pid namespace: where a lock's pid can be checked, else None."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            boot = fh.read().strip()
        return f"{boot}/{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def _code(exc: BaseException) -> str:
    """The S3 error code of a botocore ClientError (and its HTTP status, as a fallback), else ''."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return ""
    code = str(response.get("Error", {}).get("Code") or "")
    return code or str(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or "")


def _status(exc: BaseException) -> int:
    response = getattr(exc, "response", None)
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode") if isinstance(response, dict) else None
    return status if isinstance(status, int) else 0


def _boto3(run_id: str, uri: str) -> Any:
    try:
        return importlib.import_module("boto3")
    except ImportError:
        raise SdbError(
            f"run {run_id!r} in store {uri}: writing to an S3 store needs boto3, for the run's writer lock "
            f"(a conditional PUT): {INSTALL_HINT}"
        ) from None


class _S3Lock:
    """A lock object held on S3, its heartbeat and its release (see the module docstring)."""

    def __init__(self, client: Any, bucket: str, key: str, run_id: str, uri: str, body: dict[str, Any]) -> None:
        self.client, self.bucket, self.key, self.run_id, self.uri = client, bucket, key, run_id, uri
        self.body = body
        self.etag = ""
        self.lost = False
        self._pid = os.getpid()
        self._mutex = threading.Lock()  # one request on the object at a time: a beat, or the release
        self._stop = threading.Event()
        self._released = False
        self._botocore = importlib.import_module("botocore.exceptions")

    # -- taking ---------------------------------------------------------------------------------

    @classmethod
    def take(cls, store: Store, run_id: str) -> _S3Lock:
        boto3 = _boto3(run_id, store.uri)
        bucket, _, rest = store.run_dir(run_id).partition("/")
        key = f"{rest}/{LOCK_NAME}"
        body = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "token": secrets.token_hex(16),
            "time": "",
            "machine": _machine(),
        }
        try:
            client = _client(boto3, store)
        except importlib.import_module("botocore.exceptions").BotoCoreError as exc:  # a profile that is not there
            raise SdbError(f"run {run_id!r} in store {store.uri}: cannot take its writer lock ({exc})") from None
        lock = cls(client, bucket, key, run_id, store.uri, body)
        try:
            lock._acquire()
        except lock._botocore.ClientError as exc:  # no such bucket, access denied: one line
            message = str(exc.response.get("Error", {}).get("Message") or "").strip()
            reason = f"{_code(exc)}: {message}" if message else _code(exc) or type(exc).__name__
            raise SdbError(f"run {run_id!r} in store {store.uri}: cannot take its writer lock ({reason})") from None
        thread = threading.Thread(target=lock._beat, args=(HEARTBEAT_SECONDS,), daemon=True)
        thread.name = f"sdbctl-lock-{run_id}"
        thread.start()
        return lock

    def _acquire(self) -> None:
        held: dict[str, Any] | None = None
        for _ in range(5):  # each round lost to another writer ends in RunLocked; a few rounds are races
            try:
                self.etag = self._put(IfNoneMatch="*")
                return
            except self._botocore.ClientError as exc:
                if _code(exc) in _UNSUPPORTED:
                    raise SdbError(
                        f"run {self.run_id!r} in store {self.uri}: the S3 server does not support conditional "
                        "writes (If-None-Match), which the run's writer lock needs"
                    ) from None
                if _code(exc) not in _CONFLICT:
                    raise
            found = self._read()
            if found is None:  # released in between: create it again
                continue
            held, etag = found
            if held.get("token") == self.body["token"]:  # our own create, answered after a lost reply
                self.etag = etag
                return
            if not self._stale(held):
                raise self._locked(held)
            self._delete(etag)  # only if it is still the stale lock read; else the next round reads again
        raise self._locked(held or {})

    def _stale(self, held: dict[str, Any]) -> bool:
        pid = held.get("pid")
        if held.get("machine") and held.get("machine") == _machine() and isinstance(pid, int) and not _alive(pid):
            return True  # its process, of this machine, is gone
        return _age(held) > STALE_AFTER * HEARTBEAT_SECONDS

    def _locked(self, held: dict[str, Any]) -> RunLocked:
        pid, host = held.get("pid"), held.get("host")
        who = f"process {pid}" if isinstance(pid, int) else "another process"
        if isinstance(host, str) and host:
            who += f" on {host}"
        age = _age(held)
        since = f", its lock refreshed {max(age, 0):.0f} s ago" if age != float("inf") else ""
        expiry = STALE_AFTER * HEARTBEAT_SECONDS
        return RunLocked(
            f"run {self.run_id!r} in store {self.uri} is being written by {who}{since}; one writer per run: "
            f"wait for it to finish (or stop it) and try again (a killed writer's lock expires {expiry:.0f} s "
            "after its last refresh)"
        )

    # -- requests -------------------------------------------------------------------------------

    def _call(self, what: str, fn: Callable[[], T], *, budget: float | None = None) -> T:
        """``fn()``, retried with backoff on a transient error for ``SDB_S3_RETRY_SECONDS``, as the
        store's own requests are; any other error that is not a ClientError is one line."""
        if budget is None:
            budget = retry_budget()
        deadline = time.monotonic() + budget
        pause = 0.2
        errors = self._botocore
        while True:
            try:
                return fn()
            except errors.ClientError as exc:
                if not (_status(exc) >= 500 or _code(exc) in _THROTTLED) or _code(exc) in _UNSUPPORTED:
                    raise
                failure: Exception = exc
            except (errors.BotoCoreError, OSError) as exc:
                transient = (errors.ConnectionError, errors.HTTPClientError, OSError)
                if not isinstance(exc, transient):
                    raise SdbError(f"{self.uri}: {what} failed ({exc})") from None
                failure = exc
            if time.monotonic() + pause > deadline:
                reason = (str(failure).strip().splitlines() or [type(failure).__name__])[0]
                raise SdbError(f"{self.uri}: {what} failed ({reason})") from None
            time.sleep(pause * (0.5 + random.random()))
            pause = min(pause * 2, 5.0)

    def _put(self, *, budget: float | None = None, **condition: str) -> str:
        self.body["time"] = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
        data = json.dumps(self.body).encode()
        what = f"taking the writer lock s3://{self.bucket}/{self.key}"
        reply = self._call(
            what,
            lambda: self.client.put_object(Bucket=self.bucket, Key=self.key, Body=data, **condition),
            budget=budget,
        )
        return str(reply.get("ETag") or "")

    def _read(self, *, budget: float | None = None) -> tuple[dict[str, Any], str] | None:
        """The lock object's owner (none when unreadable: then aged by its modification time) and ETag."""
        try:
            reply = self._call(
                f"reading s3://{self.bucket}/{self.key}",
                lambda: self.client.get_object(Bucket=self.bucket, Key=self.key),
                budget=budget,
            )
            data = reply["Body"].read()
        except self._botocore.ClientError as exc:
            if _code(exc) in _MISSING:
                return None
            raise
        try:
            held = json.loads(data)
        except ValueError:
            held = None
        if not isinstance(held, dict):
            held = {}
        if _age(held) == float("inf") and isinstance(reply.get("LastModified"), dt.datetime):
            held["time"] = reply["LastModified"].isoformat()
        return held, str(reply.get("ETag") or "")

    def _delete(self, etag: str, *, budget: float | None = None) -> bool:
        """Delete the lock object if it is still ``etag``; False if it is not (or no longer there)."""

        def delete(**condition: str) -> None:
            self._call(
                f"deleting s3://{self.bucket}/{self.key}",
                lambda: self.client.delete_object(Bucket=self.bucket, Key=self.key, **condition),
                budget=budget,
            )

        try:
            delete(IfMatch=etag)
        except self._botocore.ClientError as exc:
            code = _code(exc)
            if code in _CONFLICT or code in _MISSING:
                return False
            if code not in _UNSUPPORTED:
                raise
            found = self._read(budget=budget)  # a server without conditional deletes: check, then delete
            if found is None or found[1] != etag:
                return False
            delete()
        return True

    # -- holding --------------------------------------------------------------------------------

    def _beat(self, every: float) -> None:
        while not self._stop.wait(every):
            with self._mutex:
                if self._released:
                    return
                try:
                    self.etag = self._put(budget=0, IfMatch=self.etag)
                except self._botocore.ClientError as exc:
                    code = _code(exc)
                    if (code in _CONFLICT or code in _MISSING) and not self._still_ours(0):
                        self.lost = True
                        _log.warning(
                            "sdbctl: warning: run %r in store %s: its writer lock s3://%s/%s was %s by another "
                            "process; this writer no longer holds it",
                            self.run_id, self.uri, self.bucket, self.key,
                            "deleted" if code in _MISSING else "taken over",
                        )  # fmt: skip
                        return
                except Exception:  # the server is down (or the object is ours after all): the next beat
                    continue

    def release(self) -> None:
        """Stop the heartbeat and delete the object if it is still ours. Idempotent; never raises."""
        self._stop.set()
        if os.getpid() != self._pid:  # a forked child holds nothing
            return
        with self._mutex:
            if self._released:
                return
            self._released = True
            if self.lost or not self.etag:
                return
            try:
                budget = min(retry_budget(), 10.0)
            except SdbError:  # releasing: a bad setting must not hide the error being handled
                budget = 10.0
            with contextlib.suppress(Exception):  # left behind, it goes stale
                if not self._delete(self.etag, budget=budget) and self._still_ours(budget):
                    self._delete(self.etag, budget=budget)

    def _still_ours(self, budget: float) -> bool:
        """Whether the object holds our token after all (a write of ours whose reply was lost); if so,
        its ETag is taken as ours."""
        try:
            found = self._read(budget=budget)
        except Exception:
            return False
        if found is None or found[0].get("token") != self.body["token"]:
            return False
        self.etag = found[1]
        return True


def _age(held: dict[str, Any]) -> float:
    """Seconds since the lock's holder last wrote it, by this host's clock (inf when unknown)."""
    stamp = held.get("time")
    try:
        when = dt.datetime.fromisoformat(stamp) if isinstance(stamp, str) else None
    except ValueError:
        when = None
    if when is None:
        return float("inf")
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return (dt.datetime.now(dt.UTC) - when).total_seconds()


def _client(boto3: Any, store: Store) -> Any:
    """A boto3 S3 client for the server, region and credentials of the store's pyarrow filesystem."""
    config = importlib.import_module("botocore.config").Config
    endpoint = s3_endpoint()
    url = None
    if endpoint:
        parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        if not parts.netloc:
            raise SdbError(f"S3 endpoint {endpoint!r}: not a URL (e.g. http://127.0.0.1:9000)")
        url = f"{parts.scheme or 'https'}://{parts.netloc}"
    region = getattr(store.loc.fs, "region", None) or "us-east-1"
    options = config(
        connect_timeout=10,
        read_timeout=30,
        retries={"mode": "standard", "max_attempts": 2},  # the budget of SDB_S3_RETRY_SECONDS is spent by _call
        s3={"addressing_style": "path" if url else "auto"},  # as Arrow addresses buckets
        request_checksum_calculation="when_required",  # S3-compatible servers that predate checksums
        response_checksum_validation="when_required",
    )
    return boto3.session.Session().client("s3", endpoint_url=url, region_name=region, config=options)
