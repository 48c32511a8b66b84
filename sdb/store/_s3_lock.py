"""The writer lock of a run in an S3 store: an object created with a conditional PUT, kept alive by
a heartbeat, taken over once stale, deleted on release only if it is still ours (the protocol is in
:mod:`sdb.store._lock`'s docstring)."""

from __future__ import annotations

import contextlib
import datetime as dt
import email.utils
import importlib
import json
import os
import random
import secrets
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, Final, TypeVar

from sdbctl.sdb.errors import RunLocked, SdbError
from sdbctl.sdb.store._fs import retry_budget
from sdbctl.sdb.store._layout import LOCK_NAME, Store
from sdbctl.sdb.store._s3_client import (
    CONFLICT,
    MISSING,
    THROTTLED,
    UNSUPPORTED,
    error_code,
    http_status,
    import_boto3,
    make_client,
)

T = TypeVar("T")
STALE_AFTER: Final = 3  # heartbeats a lock may miss before it counts as its holder's, dead


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


class S3Lock:
    """A lock object held on S3, its heartbeat and its release (see the module docstring)."""

    def __init__(
        self, client: Any, bucket: str, key: str, run_id: str, uri: str, body: dict[str, Any], *, heartbeat: float
    ) -> None:
        self.client, self.bucket, self.key, self.run_id, self.uri = client, bucket, key, run_id, uri
        self.body = body
        self.heartbeat = heartbeat  # seconds between two rewrites of the object
        self.etag = ""
        self.lost = False
        self._pid = os.getpid()
        self._mutex = threading.Lock()  # one request on the object at a time: a beat, or the release
        self._stop = threading.Event()
        self._released = False
        self._botocore = importlib.import_module("botocore.exceptions")

    # -- taking ---------------------------------------------------------------------------------

    @classmethod
    def take(cls, store: Store, run_id: str, *, heartbeat: float) -> S3Lock:
        """Create the lock object of ``run_id`` (taking over a stale one), or raise :class:`RunLocked`;
        then rewrite it every ``heartbeat`` seconds until :meth:`release`."""
        boto3 = import_boto3(run_id, store.uri)
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
            client = make_client(boto3, store)
        except importlib.import_module("botocore.exceptions").BotoCoreError as exc:  # a profile that is not there
            raise SdbError(f"run {run_id!r} in store {store.uri}: cannot take its writer lock ({exc})") from None
        lock = cls(client, bucket, key, run_id, store.uri, body, heartbeat=heartbeat)
        try:
            lock._acquire()
        except lock._botocore.ClientError as exc:  # no such bucket, access denied: one line
            message = str(exc.response.get("Error", {}).get("Message") or "").strip()
            reason = f"{error_code(exc)}: {message}" if message else error_code(exc) or type(exc).__name__
            raise SdbError(f"run {run_id!r} in store {store.uri}: cannot take its writer lock ({reason})") from None
        thread = threading.Thread(target=lock._beat, args=(heartbeat,), daemon=True)
        thread.name = f"sdbctl-lock-{run_id}"
        thread.start()
        return lock

    def _acquire(self) -> None:
        held: dict[str, Any] | None = None
        age = float("inf")
        for _ in range(5):  # each round lost to another writer ends in RunLocked; a few rounds are races
            try:
                self.etag = self._put(IfNoneMatch="*")
                return
            except self._botocore.ClientError as exc:
                if error_code(exc) in UNSUPPORTED:
                    raise SdbError(
                        f"run {self.run_id!r} in store {self.uri}: the S3 server does not support conditional "
                        "writes (If-None-Match), which the run's writer lock needs"
                    ) from None
                if error_code(exc) not in CONFLICT:
                    raise
            found = self._read()
            if found is None:  # released in between: create it again
                continue
            held, etag, age = found
            if held.get("token") == self.body["token"]:  # our own create, answered after a lost reply
                self.etag = etag
                return
            if not self._stale(held, age):
                raise self._locked(held, age)
            self._delete(etag)  # only if it is still the stale lock read; else the next round reads again
        raise self._locked(held or {}, age)

    def _stale(self, held: dict[str, Any], age: float) -> bool:
        pid = held.get("pid")
        if held.get("machine") and held.get("machine") == _machine() and isinstance(pid, int) and not _alive(pid):
            return True  # its process, of this machine, is gone
        return age > STALE_AFTER * self.heartbeat

    def _locked(self, held: dict[str, Any], age: float) -> RunLocked:
        pid, host = held.get("pid"), held.get("host")
        who = f"process {pid}" if isinstance(pid, int) else "another process"
        if isinstance(host, str) and host:
            who += f" on {host}"
        since = f", its lock refreshed {max(age, 0):.0f} s ago" if age != float("inf") else ""
        expiry = STALE_AFTER * self.heartbeat
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
                if not (http_status(exc) >= 500 or error_code(exc) in THROTTLED) or error_code(exc) in UNSUPPORTED:
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

    def _read(self, *, budget: float | None = None) -> tuple[dict[str, Any], str, float] | None:
        """The lock object's owner (empty when unreadable), ETag and age in seconds, by the server's
        clock (see :func:`_server_age`)."""
        try:
            reply = self._call(
                f"reading s3://{self.bucket}/{self.key}",
                lambda: self.client.get_object(Bucket=self.bucket, Key=self.key),
                budget=budget,
            )
            data = reply["Body"].read()
        except self._botocore.ClientError as exc:
            if error_code(exc) in MISSING:
                return None
            raise
        try:
            held = json.loads(data)
        except ValueError:
            held = None
        if not isinstance(held, dict):
            held = {}
        return held, str(reply.get("ETag") or ""), _server_age(reply)

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
            code = error_code(exc)
            if code in CONFLICT or code in MISSING:
                return False
            if code not in UNSUPPORTED:
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
                    code = error_code(exc)
                    if (code in CONFLICT or code in MISSING) and not self._still_ours(0):
                        # taken over or deleted: the writer stops at its next part or manifest and says
                        # so then (RunWriter.write), in the command's one error line
                        self.lost = True
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


def _server_age(reply: dict[str, Any]) -> float:
    """Seconds since the lock object was last written, at least, by the object store's own clock: its
    ``LastModified`` against the ``Date`` of the same reply, both stamped by the server, so that
    neither the holder's clock nor the reader's can make a live lock look stale. Both are whole
    seconds, so a second is taken off: a lock is never judged older than it can be. A server that
    sends no Date is read against this host's clock; no LastModified at all is inf."""
    modified = reply.get("LastModified")
    if not isinstance(modified, dt.datetime):
        return float("inf")
    if modified.tzinfo is None:
        modified = modified.replace(tzinfo=dt.UTC)
    headers = reply.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    now: dt.datetime | None = None
    stamp = headers.get("date") if isinstance(headers, dict) else None
    if isinstance(stamp, str):
        try:
            now = email.utils.parsedate_to_datetime(stamp)
        except (TypeError, ValueError):
            now = None
    if now is None:
        now = dt.datetime.now(dt.UTC)
    elif now.tzinfo is None:
        now = now.replace(tzinfo=dt.UTC)
    age = (now - modified).total_seconds()
    return age - 1 if modified.microsecond == now.microsecond == 0 else age
