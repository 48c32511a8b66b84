"""Talking to S3 through boto3, for the writer lock's conditional requests (which pyarrow's S3
filesystem cannot send): the client, for the server, region and credentials the store's filesystem
uses, and what a botocore error's code says."""

from __future__ import annotations

import importlib
from typing import Any, Final
from urllib.parse import urlsplit

from sdbctl.sdb.errors import SdbError
from sdbctl.sdb.store._fs import s3_endpoint
from sdbctl.sdb.store._layout import Store

INSTALL_HINT: Final = "pip install 'sdbctl[s3]'"
CONFLICT: Final = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "412", "409"})
MISSING: Final = frozenset({"NoSuchKey", "404", "NotFound"})
UNSUPPORTED: Final = frozenset({"NotImplemented", "501"})
THROTTLED: Final = frozenset({"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError"})


def error_code(exc: BaseException) -> str:
    """The S3 error code of a botocore ClientError (and its HTTP status, as a fallback), else ''."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return ""
    code = str(response.get("Error", {}).get("Code") or "")
    return code or str(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or "")


def http_status(exc: BaseException) -> int:
    """The HTTP status of a botocore ClientError (0 when it has none): a 5xx is retried."""
    response = getattr(exc, "response", None)
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode") if isinstance(response, dict) else None
    return status if isinstance(status, int) else 0


def import_boto3(run_id: str, uri: str) -> Any:
    """boto3, imported when an S3 run is written; without it writing is one line, never unlocked."""
    try:
        return importlib.import_module("boto3")
    except ImportError:
        raise SdbError(
            f"run {run_id!r} in store {uri}: writing to an S3 store needs boto3, for the run's writer lock "
            f"(a conditional PUT): {INSTALL_HINT}"
        ) from None


def make_client(boto3: Any, store: Store) -> Any:
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
