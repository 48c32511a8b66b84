"""Where a store's files live, through pyarrow's filesystem layer: a local directory, or an S3 prefix
(``s3://bucket/prefix``, also MinIO and other S3-compatible servers).

The endpoint of an S3-compatible server comes from ``--s3-endpoint`` (``SDB_S3_ENDPOINT``), else the
standard ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``; credentials from the standard AWS variables
or profile (the AWS SDK inside Arrow reads them). Writes are atomic per file: locally a hidden
temporary file renamed into place, on S3 a single PUT (an object is invisible until complete).
Transient object-store errors (connection refused, timeouts, 5xx, throttling) are retried with
backoff for up to ``SDB_S3_RETRY_SECONDS`` (default 60); anything else fails at once.

**Nothing is written through a link.** A store is data, and a symbolic link planted in it
(``diffs/a..b -> ~/``, ``runs/r/run.json -> ~/.bashrc``) must not make sdbctl write outside it: every
local write (:meth:`Location.make_dir`, :meth:`Location.write_bytes`, the writer's lock) first checks,
with ``os.lstat``, that neither its target nor any folder between the store's root and it is a link
(:meth:`Location.refuse_links`), and opens its file with ``O_NOFOLLOW``. The store's root itself is
what the user named, link or not.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import random
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import xxhash

from sdbctl.sdb.errors import SdbError, StoreNotFound

T = TypeVar("T")
_CHUNK = 8 << 20  # bytes read at a time when an object's checksum is computed
ENDPOINT_ENV = "SDB_S3_ENDPOINT"
RETRY_ENV = "SDB_S3_RETRY_SECONDS"
NO_FOLLOW = getattr(os, "O_NOFOLLOW", 0)  #: open() flag: fail on a symbolic link instead of following it


def retry_budget() -> float:
    """Seconds an object-store request may be retried for (``SDB_S3_RETRY_SECONDS``, default 60)."""
    try:
        return float(os.environ.get(RETRY_ENV) or "60")
    except ValueError:
        raise SdbError(f"{RETRY_ENV}={os.environ[RETRY_ENV]!r}: not a number of seconds") from None


_PERMANENT = (  # as S3 names them, and as Arrow's AWS SDK reports them (HEAD requests have no body)
    "NoSuchBucket",
    "NO_SUCH_BUCKET",
    "AccessDenied",
    "ACCESS_DENIED",
    "Forbidden",
    "InvalidAccessKeyId",
    "INVALID_ACCESS_KEY_ID",
    "SignatureDoesNotMatch",
    "SIGNATURE_DOES_NOT_MATCH",
    "NoSuchKey",
    "NO_SUCH_KEY",
    "RESOURCE_NOT_FOUND",
    "response code: 403",
    "response code: 404",
    "Path does not exist",
    "not found",
    "is a directory",
    "Not a directory",
)


def is_remote(spec: str | os.PathLike[str]) -> bool:
    return str(spec).startswith("s3://")


def s3_endpoint() -> str | None:
    """The endpoint override, if any: ``--s3-endpoint``, else the standard AWS variables."""
    for name in (ENDPOINT_ENV, "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        if os.environ.get(name):
            return os.environ[name]
    return None


def _s3(bucket: str) -> pafs.S3FileSystem:
    # the SDK retries briefly; the budget of SDB_S3_RETRY_SECONDS is spent by Location.retry
    options: dict[str, Any] = {"retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=2), "connect_timeout": 10}
    options["allow_delayed_open"] = True  # small objects (manifests, most parts) go up in one PUT, not three requests
    endpoint = s3_endpoint()
    if endpoint:
        parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        if not parts.netloc:
            raise SdbError(f"S3 endpoint {endpoint!r}: not a URL (e.g. http://127.0.0.1:9000)")
        options.update(endpoint_override=parts.netloc, scheme=parts.scheme or "https")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region is None and endpoint is None:
        with contextlib.suppress(OSError):
            region = pafs.resolve_s3_region(bucket)
    options["region"] = region or "us-east-1"
    if os.environ.get("AWS_PROFILE"):
        options["load_frequency"] = 900
    return pafs.S3FileSystem(**options)


def _transient(exc: OSError) -> bool:
    text = str(exc)
    return not any(marker.lower() in text.lower() for marker in _PERMANENT)


def checksum(data: bytes | mmap.mmap | pa.Buffer) -> str:
    """xxh3-64 of ``data`` as 16 hex digits: the checksum a run's manifest keeps for each part."""
    with memoryview(data) as view:
        return str(xxhash.xxh3_64_hexdigest(view))


def linked(path: str) -> SdbError:
    """The one line for a symbolic link found where sdbctl was to write in a store."""
    return SdbError(
        f"{path}: is a symbolic link inside the store, and sdbctl never writes through a link "
        "(the store is damaged: remove the link)"
    )


@dataclass(frozen=True)
class Published:
    """What was published at a path: its size and :func:`checksum`."""

    size: int
    xxh3: str


@dataclass(frozen=True)
class Location:
    """A store root on a filesystem. Paths are ``/``-joined strings below ``base``."""

    fs: pafs.FileSystem = field(compare=False)
    base: str
    uri: str
    remote: bool

    @classmethod
    def parse(cls, spec: str | os.PathLike[str]) -> Location:
        text = str(spec)
        if is_remote(text):
            rest = text[len("s3://") :].strip("/")
            bucket = rest.split("/", 1)[0]
            if not bucket:
                raise SdbError(f"store {text}: no bucket (use s3://BUCKET/PREFIX)")
            return cls(_s3(bucket), rest, f"s3://{rest}", True)
        return cls(pafs.LocalFileSystem(), str(Path(text).absolute()), text, False)

    def path(self, *parts: str) -> str:
        return "/".join([self.base, *parts])

    # -- retries -------------------------------------------------------------------------------

    def retry(self, what: str, fn: Callable[[], T]) -> T:
        """``fn()``, retried with backoff on a transient object-store error (local: called once)."""
        if not self.remote:
            return fn()
        deadline = time.monotonic() + retry_budget()
        pause = 0.2
        while True:
            try:
                return fn()
            except OSError as exc:
                if not _transient(exc) or time.monotonic() + pause > deadline:
                    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                    raise SdbError(f"{self.uri}: {what} failed ({reason})") from None
            time.sleep(pause * (0.5 + random.random()))
            pause = min(pause * 2, 5.0)

    # -- reading -------------------------------------------------------------------------------

    def kind(self, path: str) -> pafs.FileType:
        try:
            info = self.retry(f"looking up {path}", lambda: self.fs.get_file_info(path))
        except SdbError as exc:
            if "NoSuchBucket" in str(exc) or "not found" in str(exc).lower():
                return pafs.FileType.NotFound
            raise
        return info.type

    def is_file(self, path: str) -> bool:
        return self.kind(path) == pafs.FileType.File

    def is_dir(self, path: str) -> bool:
        return self.kind(path) == pafs.FileType.Directory

    def files(self, directory: str, *, recursive: bool = False) -> list[str]:
        """Paths of the files under ``directory`` (none if it does not exist), sorted."""
        return [i.path for i in self.file_infos(directory, recursive=recursive)]

    def file_infos(self, directory: str, *, recursive: bool = False) -> list[pafs.FileInfo]:
        """The files under ``directory`` with their sizes and times (none if it does not exist), by path."""
        selector = pafs.FileSelector(directory, allow_not_found=True, recursive=recursive)
        infos = self.retry(f"listing {directory}", lambda: self.fs.get_file_info(selector))
        return sorted((i for i in infos if i.type == pafs.FileType.File), key=lambda i: i.path)

    def checksum(self, path: str) -> str:
        """:func:`checksum` of the file at ``path``, read once (locally mapped, remotely streamed)."""
        if not self.remote:
            with open(path, "rb") as fh:
                if os.fstat(fh.fileno()).st_size == 0:
                    return checksum(b"")
                with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                    return checksum(mapped)

        def read() -> str:
            state = xxhash.xxh3_64()
            with self.fs.open_input_stream(path) as stream:
                while chunk := stream.read(_CHUNK):
                    state.update(chunk)
            return str(state.hexdigest())

        return self.retry(f"reading {path}", read)

    def read_footer(self, path: str) -> pq.FileMetaData:
        """The Parquet footer of ``path`` (its schema and row count), without reading its data."""
        if not self.remote:
            return pq.read_metadata(path)

        def read() -> pq.FileMetaData:
            with self.fs.open_input_file(path) as file:
                return pq.read_metadata(file)

        return self.retry(f"reading {path}", read)

    def read_bytes(self, path: str) -> bytes:
        def read() -> bytes:
            with self.fs.open_input_stream(path) as stream:
                data: bytes = stream.read()
                return data

        return self.retry(f"reading {path}", read)

    def read_parquet(self, path: str, columns: list[str] | None = None) -> pa.Table:
        return self.retry(f"reading {path}", lambda: pq.read_table(path, columns=columns, filesystem=self.fs))

    def read_schema(self, path: str) -> pa.Schema:
        return self.retry(f"reading {path}", lambda: pq.read_schema(path, filesystem=self.fs))

    # -- writing -------------------------------------------------------------------------------

    def refuse_links(self, path: str) -> None:
        """Refuse (one line naming it) to write at ``path`` when it, or a folder between the store's
        root and it, is a symbolic link: sdbctl never writes through a link in a store. A local store
        only (an object store has no links); what does not exist yet is made a real file or folder."""
        if self.remote:
            return
        current = Path(self.base)
        for part in Path(path).relative_to(current).parts:
            current = current / part
            try:
                mode = os.lstat(current).st_mode
            except FileNotFoundError:
                return
            except OSError as exc:
                raise SdbError(f"{current}: cannot write ({exc.strerror or exc})") from None
            if stat.S_ISLNK(mode):
                raise linked(str(current))

    def make_dir(self, path: str) -> None:
        if not self.remote:  # object stores have no directories: a key's prefix is enough
            self.refuse_links(path)
            Path(path).mkdir(parents=True, exist_ok=True)

    def write_bytes(self, path: str, data: bytes | pa.Buffer) -> None:
        """Publish ``data`` at ``path`` atomically: a reader sees the old file or the new, never half."""
        if not self.remote:
            # plain os calls: a writer thread re-takes the GIL after each, and every re-take can wait
            # for the switch interval while the recording thread runs (open() makes several more)
            self.refuse_links(path)
            target = Path(path)
            tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | NO_FOLLOW, 0o666)
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.replace(tmp, target)
            except OSError as exc:  # a full disk, a quota: one line, and no half-written temp file left
                tmp.unlink(missing_ok=True)
                raise SdbError(f"{target}: cannot write ({exc.strerror or exc})") from None
            return

        def put() -> None:
            with self.fs.open_output_stream(path) as stream:
                stream.write(data)

        self.retry(f"writing {path}", put)

    def write_parquet(self, table: pa.Table, path: str, **options: Any) -> Published:
        """Publish ``table`` as a Parquet file at ``path`` atomically; returns its size and checksum.

        Encoded in memory once (the checksum is of the very bytes published), then written under a
        hidden temporary name of this process, fsynced and renamed (locally) or sent as one PUT per
        attempt (S3)."""
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, **options)
        data = sink.getvalue()
        published = Published(data.size, checksum(data))
        self.write_bytes(path, data)
        return published

    def delete_file(self, path: str) -> None:
        """Remove the file at ``path``; one that is already gone is no error."""
        with contextlib.suppress(FileNotFoundError):
            self.retry(f"deleting {path}", lambda: self.fs.delete_file(path))

    def delete_dir(self, path: str) -> None:
        with contextlib.suppress(OSError, SdbError):
            self.retry(f"deleting {path}", lambda: self.fs.delete_dir(path))

    def check_exists(self, hint: str) -> None:
        """A store that does not exist is a one-line :class:`StoreNotFound`."""
        if self.remote:
            bucket = self.base.split("/", 1)[0]
            if self.kind(bucket) != pafs.FileType.Directory:
                raise StoreNotFound(f"store {self.uri}: bucket {bucket!r} not found (or not readable){hint}")
            if "/" in self.base and not self.is_dir(self.base):
                raise StoreNotFound(f"store {self.uri}: no such prefix{hint}; record a run first")
        elif not Path(self.base).is_dir():
            raise StoreNotFound(f"store {self.uri}: no such directory{hint}; record a run first")
