"""Snapshots on S3 or an S3-compatible server (MinIO, Ceph …), through boto3.

Credentials come from boto3's default chain only (the standard AWS environment variables, a
profile, an instance role): never from ebbtide.yml, never in a message. This module is imported
only when `snapshots.url` is `s3://…`, so a workspace without it never imports boto3.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import boto3  # type: ignore[import-untyped]
import boto3.exceptions  # type: ignore[import-untyped]
import botocore.exceptions as boto_errors  # type: ignore[import-untyped]
from botocore.config import Config  # type: ignore[import-untyped]

from ebbtide.snapshots.remote import ObjectStoreError

T = TypeVar("T")

_NO_BUCKET = {"NoSuchBucket", "404", "NotFound"}
_NO_OBJECT = {"NoSuchKey", "404", "NotFound"}
_CREDENTIALS = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "AuthorizationHeaderMalformed",
    "InvalidClientTokenId",
}
_DENIED = {"AccessDenied", "403", "AllAccessDisabled"}
_DELETE_BATCH = 1000  # S3 deletes at most this many keys per request


class S3Objects:
    """Objects under `s3://bucket/prefix`."""

    def __init__(self, url: str, *, endpoint_url: str | None, region: str | None) -> None:
        self.url = url.rstrip("/")
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.endpoint_url = endpoint_url
        config = Config(
            connect_timeout=10,
            read_timeout=60,
            retries={"max_attempts": 3, "mode": "standard"},
            s3={"addressing_style": "path"} if endpoint_url else {},
        )
        self._client: Any = boto3.session.Session().client(
            "s3", endpoint_url=endpoint_url, region_name=region, config=config
        )

    def check(self) -> None:
        with self._explained("reach"):
            self._client.head_bucket(Bucket=self.bucket)

    def put_file(self, key: str, file: Path) -> None:
        with self._explained(f"upload {key} to"):
            self._client.upload_file(str(file), self.bucket, self._key(key))

    def put_bytes(self, key: str, data: bytes) -> None:
        with self._explained(f"upload {key} to"):
            self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def get_file(self, key: str, file: Path) -> bool:
        partial = file.with_name(f"{file.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.partial")
        try:
            with self._explained(f"download {key} from"):
                found = self._missing_is_false(
                    lambda: self._client.download_file(self.bucket, self._key(key), str(partial))
                )
            if found:
                os.replace(partial, file)
            return found
        finally:
            partial.unlink(missing_ok=True)

    def get_bytes(self, key: str) -> bytes | None:
        with self._explained(f"download {key} from"):
            answer = self._missing_is_none(
                lambda: self._client.get_object(Bucket=self.bucket, Key=self._key(key))
            )
            return None if answer is None else bytes(answer["Body"].read())

    def list_keys(self, prefix: str) -> list[str]:
        return sorted(self.list_modified(prefix))

    def list_modified(self, prefix: str) -> dict[str, float]:
        found: dict[str, float] = {}
        with self._explained("list"):
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self._key(prefix)
            )
            for page in pages:
                for stored in page.get("Contents", []):
                    found[self._relative(stored["Key"])] = stored["LastModified"].timestamp()
        return found

    def delete(self, keys: list[str]) -> None:
        with self._explained("delete from"):
            for start in range(0, len(keys), _DELETE_BATCH):
                chunk = keys[start : start + _DELETE_BATCH]
                self._client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": self._key(k)} for k in chunk], "Quiet": True},
                )

    # -- helpers -------------------------------------------------------------------------

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _relative(self, key: str) -> str:
        return key[len(self.prefix) + 1 :] if self.prefix else key

    def _missing_is_none(self, call: Callable[[], T]) -> T | None:
        try:
            return call()
        except boto_errors.ClientError as error:
            if _code(error) in _NO_OBJECT and _code(error) != "NoSuchBucket":
                self.check()  # a bare 404 (HEAD) may mean the bucket is gone, not the object
                return None
            raise

    def _missing_is_false(self, call: Callable[[], object]) -> bool:
        return self._missing_is_none(lambda: call() or True) is not None

    @contextmanager
    def _explained(self, doing: str) -> Iterator[None]:
        """boto3's errors, said as what they mean; the URL named, credentials never."""
        try:
            yield
        except boto_errors.NoCredentialsError:
            raise ObjectStoreError(
                f"cannot {doing} the snapshot store {self.url}: no AWS credentials found; set"
                " AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) in the"
                " environment of every ebbtide process"
            ) from None
        except boto_errors.ClientError as error:
            raise ObjectStoreError(self._refused(doing, error)) from None
        except boto3.exceptions.Boto3Error as error:  # upload_file's S3UploadFailedError
            cause = error.__cause__ or error.__context__
            if isinstance(cause, boto_errors.ClientError):
                raise ObjectStoreError(self._refused(doing, cause)) from None
            raise ObjectStoreError(
                f"cannot {doing} the snapshot store {self.url}: {_first_line(error)}"
            ) from None
        except (boto_errors.BotoCoreError, OSError) as error:
            where = f" at {self.endpoint_url}" if self.endpoint_url else ""
            raise ObjectStoreError(
                f"cannot {doing} the snapshot store {self.url}{where}:"
                f" {type(error).__name__}: {_first_line(error)}. Check that it is reachable"
                " from this machine, then run the command again."
            ) from None

    def _refused(self, doing: str, error: boto_errors.ClientError) -> str:
        code = _code(error)
        start = f"cannot {doing} the snapshot store {self.url}"
        if code in _NO_BUCKET:
            return (
                f"{start}: the bucket {self.bucket!r} does not exist; create it, or fix"
                " `snapshots.url` in ebbtide.yml"
            )
        if code in _CREDENTIALS:
            return (
                f"{start}: the server refused the AWS credentials ({code}); check"
                " AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment"
            )
        if code in _DENIED:
            return f"{start}: access denied ({code}); the credentials in use may not do this"
        return f"{start}: {code}: {_first_line(error)}"


def _code(error: boto_errors.ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else ""
