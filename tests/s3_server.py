"""A real S3-compatible server on 127.0.0.1 for tests: moto's server mode, in this process, so that it
can be stopped and started again on the same port with its buckets kept (moto's state lives in the
process, not in the server thread)."""

from __future__ import annotations

import socket
import time
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class S3Server:
    """``with S3Server() as s3: s3.env`` -> the variables a client needs (endpoint, credentials)."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._server: ThreadedMotoServer | None = None

    @property
    def env(self) -> dict[str, str]:
        return {**CREDENTIALS, "AWS_ENDPOINT_URL": self.endpoint}

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def start(self) -> None:
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        for _ in range(100):  # until it answers
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def keys(self, bucket: str) -> list[str]:
        found = self.client().list_objects_v2(Bucket=bucket).get("Contents", [])
        return sorted(o["Key"] for o in found)

    def empty_bucket(self, bucket: str) -> None:
        """``bucket``, created, or emptied when it is there: moto's state outlives one server, and each
        test starts from no objects."""
        client = self.client()
        if bucket in [b["Name"] for b in client.list_buckets().get("Buckets", [])]:
            for key in self.keys(bucket):
                client.delete_object(Bucket=bucket, Key=key)
        else:
            client.create_bucket(Bucket=bucket)

    def __enter__(self) -> S3Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
