"""A real S3 API server for the object storage tests: moto's ``ThreadedMotoServer``.

It listens on 127.0.0.1 on a free port in a thread of the test process and is stopped by
the fixture that started it. :func:`use_s3` points this process's S3 clients at it for one
test (credentials, region, endpoint; ``~/.aws`` is hidden) through ``monkeypatch``, so
nothing leaks into other tests; :meth:`S3Server.env` is the same for subprocesses (dvc,
mlflow server).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

ACCESS_KEY = "inpnet-test-key"
SECRET_KEY = "inpnet-test-secret"  # noqa: S105 - moto accepts any key; this is no secret
REGION = "us-east-1"


@dataclass(frozen=True)
class S3Server:
    endpoint: str  # http://127.0.0.1:PORT

    def env(self, *, home: Path | None = None) -> dict[str, str]:
        """Variables that point boto3/s3fs/aiobotocore, DVC and MLflow at this server."""
        hidden = str((home or Path("/nonexistent")) / "no-aws-config")
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "AWS_ENDPOINT_URL_S3": self.endpoint,  # botocore >= 1.31 (s3fs, dvc-s3, boto3)
            "MLFLOW_S3_ENDPOINT_URL": self.endpoint,
            "AWS_CONFIG_FILE": hidden,
            "AWS_SHARED_CREDENTIALS_FILE": hidden,
        }

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )

    def bucket(self, prefix: str = "inpnet") -> str:
        """A new, empty bucket with a unique name."""
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        self.client().create_bucket(Bucket=name)
        return name

    def upload(self, folder: Path, bucket: str, prefix: str) -> list[str]:
        """Every file below ``folder`` to ``s3://bucket/prefix/<relative path>``; the keys written."""
        s3, keys = self.client(), []
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            key = f"{prefix.rstrip('/')}/{path.relative_to(folder).as_posix()}"
            s3.upload_file(str(path), bucket, key)
            keys.append(key)
        return keys

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))

    @contextlib.contextmanager
    def enforce_credentials(self) -> Iterator[None]:
        """Check signatures against moto's IAM for a block: the test keys are unknown there, so
        every request is refused as real S3 refuses a wrong key (403 InvalidAccessKeyId)."""
        answer = requests.post(f"{self.endpoint}/moto-api/reset-auth", data=b"0", timeout=10)
        answer.raise_for_status()
        try:
            yield
        finally:
            previous = answer.json()["PREVIOUS_INITIAL_NO_AUTH_ACTION_COUNT"]
            requests.post(f"{self.endpoint}/moto-api/reset-auth", data=previous.encode(), timeout=10)


@contextlib.contextmanager
def moto_server() -> Iterator[S3Server]:
    """moto's S3-compatible server on 127.0.0.1 and a free port, stopped on exit."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield S3Server(f"http://{host}:{port}")
    finally:
        server.stop()


def forget_s3_clients() -> None:
    """Drop fsspec's cached S3 file systems: they keep the credentials and endpoint they were made with."""
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()


def use_s3(server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point this process's S3 clients at ``server`` until the test ends (monkeypatch undoes it)."""
    for key, value in server.env().items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(key, raising=False)
    forget_s3_clients()
