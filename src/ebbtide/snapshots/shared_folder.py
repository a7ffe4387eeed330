"""Snapshots in a folder every worker mounts (NFS, SMB, a cluster file system).

Objects are files under the folder; each is written under a temporary name in its own folder
and renamed, so a reader sees it whole or not at all.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ebbtide.snapshots.remote import ObjectStoreError


class FolderObjects:
    """Objects as files under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = root.as_uri()

    def check(self) -> None:
        if not self.root.is_dir():
            raise ObjectStoreError(
                f"the snapshot store {self.url} does not exist (or is not a folder): create it"
                " or mount the shared folder there, or fix `snapshots.url`"
            )

    def put_file(self, key: str, file: Path) -> None:
        with self._explained(f"write {key} to"), self._written(key) as partial:
            shutil.copyfile(file, partial)

    def put_bytes(self, key: str, data: bytes) -> None:
        with self._explained(f"write {key} to"), self._written(key) as partial:
            partial.write_bytes(data)

    def get_file(self, key: str, file: Path) -> bool:
        source = self._path(key)
        partial = file.with_name(f"{file.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.partial")
        with self._explained(f"read {key} from"):
            if not source.is_file():
                return False
            try:
                shutil.copyfile(source, partial)
                os.replace(partial, file)
            finally:
                partial.unlink(missing_ok=True)
        return True

    def get_bytes(self, key: str) -> bytes | None:
        with self._explained(f"read {key} from"):
            try:
                return self._path(key).read_bytes()
            except FileNotFoundError:
                return None

    def list_keys(self, prefix: str) -> list[str]:
        return sorted(self.list_modified(prefix))

    def list_modified(self, prefix: str) -> dict[str, float]:
        start = self._path(prefix.rstrip("/"))
        if not start.is_dir():
            return {}
        with self._explained("list"):
            return {
                p.relative_to(self.root).as_posix(): p.stat().st_mtime
                for p in start.rglob("*")
                if p.is_file() and not p.name.endswith(".partial")
            }

    def delete(self, keys: list[str]) -> None:
        with self._explained("delete from"):
            for key in keys:
                path = self._path(key)
                path.unlink(missing_ok=True)
                for parent in path.parents:  # empty version and run folders go too
                    if parent == self.root or any(parent.iterdir()):
                        break
                    with contextlib.suppress(OSError):  # a writer may be filling it again
                        parent.rmdir()

    def _path(self, key: str) -> Path:
        return self.root / key

    @contextmanager
    def _written(self, key: str) -> Iterator[Path]:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f"{target.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.partial")
        try:
            yield partial
            with open(partial, "rb+") as written:
                os.fsync(written.fileno())
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)

    @contextmanager
    def _explained(self, doing: str) -> Iterator[None]:
        self.check()
        try:
            yield
        except OSError as error:
            raise ObjectStoreError(
                f"cannot {doing} the snapshot store {self.url}: {error.strerror or error}"
            ) from error
