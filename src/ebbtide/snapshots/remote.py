"""Snapshots kept where every worker reads them: fetch before the diff, publish at commit.

Layout under the store's URL (`s3://bucket/prefix` or a shared folder), per mapping:

- `<mapping>/versions/<version>/snapshot.duckdb`: immutable snapshot files, one per version
  published; the state store says which one is current (`SnapshotPointer`);
- `<mapping>/acks/<run>/<batch>.arrow`: each batch the destination acknowledged, uploaded
  before the run counts it (the checkpoint); a run applies the ones newer than the version;
- `<mapping>/sent/<run>.parquet`: what each run sent, for replays.

The workspace's `.ebbtide/` folder is a cache: a run downloads the current version only when
its local copy is not that version, byte for byte as it was published.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, Protocol

import pyarrow as pa

from ebbtide.config.models import SnapshotsSpec
from ebbtide.errors import StorageError
from ebbtide.ports import SnapshotPointer, SnapshotPointerBook
from ebbtide.snapshots.journal import journal_files
from ebbtide.values import Lease

log = logging.getLogger(__name__)


class ObjectStoreError(StorageError):
    """The shared snapshot store cannot be reached, does not exist, refused the credentials
    or failed a request; the message names its URL, never a credential."""


def raise_missing(url: str, version: str) -> NoReturn:
    raise ObjectStoreError(
        f"the snapshot store {url} has no snapshot version {version}, which the state store"
        " says is current: it was deleted or the store was emptied. Nothing was sent; reset"
        " the mapping (`ebbtide reset`) to sync it anew."
    )


SNAPSHOT_OBJECT = "snapshot.duckdb"


class ObjectStore(Protocol):
    """Objects by key (relative to the store's URL): an S3 bucket prefix, or a folder.

    Every method raises `ObjectStoreError` (a StorageError) naming the URL when it fails.
    """

    url: str  # as shown to people: never holds credentials

    def check(self) -> None:
        """Fail clearly when the store cannot be reached or does not exist."""
        ...

    def put_file(self, key: str, file: Path) -> None:
        """Upload a file; the object appears whole or not at all."""
        ...

    def put_bytes(self, key: str, data: bytes) -> None: ...

    def get_file(self, key: str, file: Path) -> bool:
        """Download to `file` (written whole, then renamed); False when there is no object."""
        ...

    def get_bytes(self, key: str) -> bytes | None: ...

    def list_keys(self, prefix: str) -> list[str]:
        """Every key under `prefix`, sorted."""
        ...

    def list_modified(self, prefix: str) -> dict[str, float]:
        """Every key under `prefix` with when it was written (seconds since the epoch)."""
        ...

    def delete(self, keys: list[str]) -> None: ...


def open_object_store(spec: SnapshotsSpec, root: Path) -> ObjectStore:
    """The store `snapshots.url` names; boto3 is imported only for an `s3://` URL."""
    if spec.url.startswith("s3://"):
        from ebbtide.snapshots.s3 import S3Objects

        return S3Objects(spec.url, endpoint_url=spec.endpoint_url, region=spec.region)
    from ebbtide.snapshots.shared_folder import FolderObjects

    path = Path(spec.url.removeprefix("file://"))
    return FolderObjects(path if path.is_absolute() else root / path)


@dataclass(frozen=True)
class _Cached:
    """What the local snapshot file was when it was fetched or published."""

    version: str
    size: int
    mtime_ns: int


class SharedSnapshots:
    """One mapping's snapshot, acknowledgement journals and sent journals in a shared store."""

    def __init__(
        self,
        objects: ObjectStore,
        pointers: SnapshotPointerBook,
        state_dir: Path,
        mapping: str,
        keep_versions: int = 3,
        keep_sent_days: float | None = None,
    ) -> None:
        self.objects, self.pointers = objects, pointers
        self.mapping, self.keep_versions = mapping, keep_versions
        self.keep_sent_days = keep_sent_days
        base = state_dir / "snapshots"
        self.file = base / f"{mapping}.duckdb"
        self.journal_dir = base / f"{mapping}.journal"
        self._marker = base / f"{mapping}.version"
        self.pointer = SnapshotPointer(mapping, None, 0, 0)
        self.fetched_through = 0  # the newest run whose acknowledgements were fetched

    @property
    def url(self) -> str:
        return f"{self.objects.url.rstrip('/')}/{self.mapping}"

    # -- fetch ---------------------------------------------------------------------------

    def fetch(self, *, snapshot: bool = True) -> SnapshotPointer:
        """Bring the current version into `.ebbtide/` (unless it is there already) and the
        acknowledgements published since as local journals, which the run then applies."""
        self.objects.check()
        self.pointer = pointer = self.pointers.current(self.mapping)
        self.file.parent.mkdir(parents=True, exist_ok=True)
        if self.adopts_local():
            return pointer  # published by this run, as the first version (see `adopts_local`)
        if snapshot:
            self._fetch_snapshot(pointer.version)
        self._fetch_acknowledgements(pointer.through_run)
        return pointer

    def adopts_local(self) -> bool:
        """A workspace that kept its snapshots in `.ebbtide/` before `snapshots:` was set keeps
        them: while nothing was ever published for the mapping, its local snapshot (and any
        journal of a dead run beside it) is what the first run publishes."""
        return self.pointer.generation == 0 and self.file.exists()

    def is_cached(self, version: str | None) -> bool:
        """Whether the local file is `version` exactly as published (or fetched)."""
        if version is None:
            return not self.file.exists()
        cached = self._cached()
        wal = self.file.with_name(self.file.name + ".wal")
        if cached is None or cached.version != version or wal.exists():
            return False
        try:
            stat = self.file.stat()
        except FileNotFoundError:
            return False
        return (stat.st_size, stat.st_mtime_ns) == (cached.size, cached.mtime_ns)

    def download(self, version: str, file: Path) -> None:
        """The snapshot file of `version` at `file`."""
        file.parent.mkdir(parents=True, exist_ok=True)
        if not self.objects.get_file(self._version_key(version), file):
            raise_missing(self.url, version)

    def _fetch_snapshot(self, version: str | None) -> None:
        if self.is_cached(version):
            return
        self._forget_local()
        if version is not None:
            self.download(version, self.file)
            self._remember(version)

    def _forget_local(self) -> None:
        self._marker.unlink(missing_ok=True)
        for file in (self.file, self.file.with_name(self.file.name + ".wal")):
            file.unlink(missing_ok=True)

    def _fetch_acknowledgements(self, through_run: int) -> None:
        """Local journals become copies of the acknowledgements published after the version."""
        shutil.rmtree(self.journal_dir, ignore_errors=True)
        self.fetched_through = through_run
        for run_id, keys in sorted(self._acknowledgements().items()):
            if run_id <= through_run:
                continue  # in the version already, or void (a reset came after)
            self.journal_dir.mkdir(parents=True, exist_ok=True)
            _assemble(self.journal_dir / f"{run_id:012d}.arrow", self._segments(keys))
            self.fetched_through = max(self.fetched_through, run_id)

    def _segments(self, keys: list[str]) -> list[bytes]:
        return [data for key in keys if (data := self.objects.get_bytes(key)) is not None]

    def _acknowledgements(self) -> dict[int, list[str]]:
        by_run: dict[int, list[str]] = defaultdict(list)
        for key in self.objects.list_keys(f"{self.mapping}/acks/"):
            run = key.split("/")[-2]
            if run.isdigit():
                by_run[int(run)].append(key)
        return by_run

    # -- publish -------------------------------------------------------------------------

    def put_acknowledged(self, run_id: int, batch: int, stream: bytes) -> None:
        """One acknowledged batch (an Arrow IPC stream), before the run counts it."""
        self.objects.put_bytes(f"{self.mapping}/acks/{run_id:012d}/{batch:08d}.arrow", stream)

    def changed(self) -> bool:
        """Whether the local file differs from the version it was fetched as."""
        return not self.is_cached(self.pointer.version)

    def publish(self, lease: Lease, through_run: int) -> None:
        """Upload the local snapshot as a new version and make it current, fenced by the lease.

        An upload that fails raises (the pointer stays); a lost lease raises LeaseLostError and
        the uploaded version is never read (it is deleted with the old ones).
        """
        version = f"{lease.run_id:012d}-{uuid.uuid4().hex[:8]}"
        self.objects.put_file(self._version_key(version), self.file)
        self.pointer = self.pointers.advance(lease, self.pointer, version, through_run)
        self._remember(version)
        self.collect_garbage()

    def clear(self, lease: Lease) -> None:
        """Reset: the current version becomes empty, and every acknowledgement so far void."""
        self._forget_local()
        shutil.rmtree(self.journal_dir, ignore_errors=True)
        current = self.pointers.current(self.mapping)
        self.pointer = self.pointers.advance(lease, current, None, lease.run_id)
        self.collect_garbage()

    def collect_garbage(self) -> None:
        """Best effort: versions older than the last few, acknowledgements already applied."""
        try:
            versions = sorted(
                {k.split("/")[2] for k in self.objects.list_keys(f"{self.mapping}/versions/")}
            )
            old = [v for v in versions[: -self.keep_versions] if v != self.pointer.version]
            applied = [
                key
                for run, keys in self._acknowledgements().items()
                if run <= self.pointer.through_run
                for key in keys
            ]
            self.objects.delete([self._version_key(v) for v in old] + applied)
            if self.keep_sent_days is not None:
                self.prune_sent(self.keep_sent_days)
        except ObjectStoreError as error:
            log.warning("old snapshot versions were not deleted: %s", error)

    def prune_sent(self, keep_days: float, now: float | None = None) -> int:
        """Delete the sent journals older than `keep_days` (`journals.keep_days`, as the local
        ones); returns how many."""
        cutoff = (time.time() if now is None else now) - keep_days * 86_400
        written = self.objects.list_modified(f"{self.mapping}/sent/")
        old = [key for key, at in written.items() if at < cutoff]
        self.objects.delete(old)
        return len(old)

    # -- sent journals -------------------------------------------------------------------

    def put_sent(self, run_id: int, file: Path) -> None:
        self.objects.put_file(self._sent_key(run_id), file)

    def get_sent(self, run_id: int, file: Path) -> bool:
        """A run's sent journal (for a replay on a machine that did not run it)."""
        file.parent.mkdir(parents=True, exist_ok=True)
        return self.objects.get_file(self._sent_key(run_id), file)

    def fetch_all_sent(self, directory: Path) -> int:
        """Every sent journal in the store that `directory` lacks (a key's history reads
        them all); returns how many were fetched."""
        fetched = 0
        for key in self.objects.list_keys(f"{self.mapping}/sent/"):
            file = directory / key.rsplit("/", 1)[-1]
            if not file.exists() and self.objects.get_file(key, file):
                fetched += 1
        return fetched

    # -- helpers -------------------------------------------------------------------------

    def _version_key(self, version: str) -> str:
        return f"{self.mapping}/versions/{version}/{SNAPSHOT_OBJECT}"

    def _sent_key(self, run_id: int) -> str:
        return f"{self.mapping}/sent/{run_id:012d}.parquet"

    def _remember(self, version: str) -> None:
        stat = self.file.stat()
        cached = {"version": version, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        partial = self._marker.with_name(self._marker.name + ".partial")
        partial.write_text(json.dumps(cached))
        os.replace(partial, self._marker)

    def _cached(self) -> _Cached | None:
        try:
            return _Cached(**json.loads(self._marker.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def local_journals(self) -> list[Path]:
        return journal_files(self.journal_dir)


def _assemble(file: Path, segments: list[bytes]) -> None:
    """One local journal of a run from its published batches (a damaged one ends it, like a
    batch torn by a crash: resent by the run that applies it)."""
    writer: pa.ipc.RecordBatchStreamWriter | None = None
    with pa.OSFile(str(file), "wb") as sink:
        for data in segments:
            try:
                batches = list(pa.ipc.open_stream(pa.py_buffer(data)))
            except (pa.ArrowInvalid, OSError):
                break
            for batch in batches:
                if writer is None:
                    writer = pa.ipc.new_stream(sink, batch.schema)
                writer.write_batch(batch)
        if writer is not None:
            writer.close()
