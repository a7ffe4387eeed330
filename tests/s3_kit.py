"""A local S3 server (moto's) for the tests of snapshots kept in an object store, and AWS
settings that point at it and at nothing of this machine's own. Its fixtures are registered
by tests/conftest.py; boto3 and moto are imported only by the tests that use them."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def s3_server() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Dummy credentials for moto, and nothing from this machine's own AWS set-up."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "AKIDTESTNOTREAL",
        "AWS_SECRET_ACCESS_KEY": "secret-test-not-real-4711",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)


def new_bucket(endpoint: str) -> str:
    import boto3

    name = f"ebbtide-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=name)
    return name
