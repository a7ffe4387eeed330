"""Load: send outbound batches with bounded concurrency, retry what is retriable, settle results."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import pyarrow as pa

from ebbtide.config.redact import Redactor
from ebbtide.engine.acknowledgement import Acknowledged, acknowledge
from ebbtide.engine.backoff import Backoff
from ebbtide.engine.masking import batch_redactor, payload_sample
from ebbtide.engine.rate_limit import Unlimited
from ebbtide.errors import DestinationError, ErrorClass
from ebbtide.mapping.compiler import CompiledMapping
from ebbtide.ports import (
    KEY_COLUMN,
    OP_COLUMN,
    PROBLEM_COLUMN,
    RECORD_COLUMN,
    TOO_LARGE_COLUMN,
    Destination,
    Journal,
    Operation,
    OutboundBatch,
    RecordRejection,
    SentLog,
    iter_batches,
)
from ebbtide.values import RecordFailure, RunCounts

log = logging.getLogger(__name__)
_T = TypeVar("_T")

# Whole-batch answers that mean "something in here is wrong", worth splitting to find it.
_SPLITTABLE = frozenset({ErrorClass.VALIDATION, ErrorClass.PAYLOAD_TOO_LARGE})
_TOO_LARGE = ErrorClass.PAYLOAD_TOO_LARGE


class Limiter(Protocol):
    def slot(self) -> AbstractAsyncContextManager[None]: ...

    def pause(self, seconds: float) -> None: ...


async def _always() -> bool:
    return True


@dataclass
class LoadSettings:
    batch_size: int
    concurrency: int
    backoff: Backoff = field(default_factory=Backoff)
    give_up_after: int = 3  # batches in a row that failed every retry
    max_record_bytes: int | None = None
    max_request_bytes: int | None = None  # the records' JSON per request, summed
    limiter: Limiter = field(default_factory=Unlimited)
    may_send: Callable[[], Awaitable[bool]] = _always  # False once the run lost its lease


@dataclass
class Loader:
    """Delivers one run's changes and keeps its books: journal, counts, failures."""

    mapping: CompiledMapping
    run_id: int
    destination: Destination
    journal: Journal
    settings: LoadSettings
    counts: RunCounts
    on_failures: Callable[[list[RecordFailure]], None]
    redact: Redactor  # the workspace's secrets; each batch adds its sensitive values
    on_progress: Callable[[int], None] = lambda n: None
    sent: SentLog | None = None  # every record with its outcome, for replays
    origin: str = ""  # the state store's name, part of every idempotency key
    epoch: str = ""  # see OutboundBatch.epoch: set for a replay, and after a reset
    fatal: DestinationError | None = None
    fenced: bool = False
    _failing_in_a_row: int = 0
    # Journal appends, one at a time; one that may wait on the network (a shared store
    # uploads each batch, a warehouse checkpoints) runs off the event loop, so requests in
    # flight go on meanwhile.
    _journaling: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def run(self, reader: pa.RecordBatchReader) -> None:
        """Send every batch of `reader`; stops early only when sending more is pointless."""
        in_flight: set[asyncio.Task[None]] = set()
        batches = iter_batches(reader)
        try:
            await self.destination.open()
            number = 0
            # Rendering the next batch runs in DuckDB off the event loop (it releases the
            # GIL), so it overlaps with the requests in flight.
            while (records := await _in_thread(next, batches, None)) is not None:
                number += 1
                if self.fatal is not None or self.fenced:
                    break
                while len(in_flight) >= self.settings.concurrency:
                    done, in_flight = await asyncio.wait(
                        in_flight, return_when=asyncio.FIRST_COMPLETED
                    )
                    _reraise(done)
                batch = OutboundBatch(
                    self.run_id,
                    number,
                    self.mapping.name,
                    self.mapping.action,
                    self.mapping.mode,
                    records,
                    origin=self.origin,
                    epoch=self.epoch,
                )
                in_flight.add(asyncio.create_task(self._deliver_in_requests(batch)))
            if in_flight:
                done, in_flight = await asyncio.wait(in_flight)
                _reraise(done)
        finally:
            for task in in_flight:
                task.cancel()
            # Awaited, so no task's error is left to be printed as "never retrieved".
            await asyncio.gather(*in_flight, return_exceptions=True)
            await self.destination.close()

    async def _deliver_in_requests(self, batch: OutboundBatch) -> None:
        """A batch in as many requests as the destination's per-request byte limit takes."""
        for part in _by_request_bytes(batch, self.settings.max_request_bytes):
            await self._deliver(part)

    async def _deliver(self, batch: OutboundBatch) -> None:
        batch = self._without_oversized(self._without_unconvertible(batch))
        if not len(batch):
            return
        outcome = await self._attempt(batch)
        if outcome is None:
            return  # abandoned after a fatal error: unsent, unacknowledged, sent next time
        if isinstance(outcome, Acknowledged):
            self._failing_in_a_row = 0
            await self._settle(batch, outcome)
        elif outcome.error_class in _SPLITTABLE and len(batch) > 1:
            await self._isolate(batch, outcome)
        else:
            self._fail_all(batch, outcome)

    async def _attempt(self, batch: OutboundBatch) -> Acknowledged | DestinationError | None:
        """Send with retries; the result, the last error, or None when the run stopped."""
        attempts = self.settings.backoff.attempts
        for attempt in range(1, attempts + 1):
            if self.fatal is not None or self.fenced:
                return None
            if not await self.settings.may_send():
                self.fenced = True  # another run owns the mapping now: send nothing more
                return None
            try:
                async with self.settings.limiter.slot():
                    answer = await self.destination.send(batch)
                if answer.pause_s:  # the allowance is spent: nothing more before it is back
                    self.settings.limiter.pause(answer.pause_s)
                # An answer that cannot be matched to the batch raises here: retried like a
                # failure on the destination's side, and nothing is settled from it.
                return acknowledge(batch.records, answer)
            except DestinationError as error:
                if error.error_class is ErrorClass.RATE_LIMITED and error.retry_after:
                    self.settings.limiter.pause(error.retry_after)
                if not error.error_class.retriable or attempt == attempts:
                    return error
                await asyncio.sleep(self.settings.backoff.delay(attempt, error.retry_after))
        raise AssertionError("unreachable")

    async def _isolate(self, batch: OutboundBatch, error: DestinationError) -> None:
        """A batch refused whole: halve it to find the records at fault.

        The suspect half is narrowed down without being sent whole again; the halves set
        aside on the way go out afterwards as one batch (split again if refused). One bad
        record in n costs about log2(n) + 1 extra requests (+ 1 when the refusal was for size).
        """
        aside: list[OutboundBatch] = []
        suspect: OutboundBatch | None = batch
        refused = True  # whether the suspect itself was refused, or only presumed at fault
        while suspect is not None and len(suspect) > 1:
            first, second = suspect.halves()
            outcome = await self._attempt(first)
            if outcome is None:
                return
            if isinstance(outcome, Acknowledged):
                await self._settle(first, outcome)
                suspect, refused = second, False  # the fault is presumably in the second half
            elif outcome.error_class in _SPLITTABLE:
                aside.append(second)
                suspect, error, refused = first, outcome, True
            else:
                self._fail_all(first, outcome)
                aside.append(second)
                suspect = None
        if suspect is not None and not refused and error.error_class is _TOO_LARGE:
            # A batch refused for its size blames no record (a refused half of valid records
            # does: one of them is at fault): the last one is tried alone before it fails.
            outcome = await self._attempt(suspect)
            if outcome is None:
                return
            if isinstance(outcome, Acknowledged):
                await self._settle(suspect, outcome)
                suspect = None
            else:
                error = outcome
        if suspect is not None:
            self._fail_all(suspect, error)
        if aside and self.fatal is None:
            await self._deliver_in_requests(_joined(aside))

    def _without_unconvertible(self, batch: OutboundBatch) -> OutboundBatch:
        """A row whose values cannot become its payload fails alone, never sent."""
        if PROBLEM_COLUMN not in batch.records.schema.names:
            return batch
        problems: Any = batch.records.column(PROBLEM_COLUMN)
        if problems.null_count == len(problems):
            return batch
        at = {
            i: RecordRejection("", ErrorClass.MAPPING, str(problem))
            for i, problem in enumerate(problems.to_pylist())
            if problem is not None
        }
        return self._set_aside(batch, at)

    def _without_oversized(self, batch: OutboundBatch) -> OutboundBatch:
        """A record larger than the destination accepts fails alone, not with its batch: one
        the snapshot store found too large to build, or one rendered past `max_record_bytes`."""
        import pyarrow.compute as pc

        at = _marked_too_large(batch.records)
        limit = self.settings.max_record_bytes
        if limit is not None:
            records: Any = batch.records.column(RECORD_COLUMN)
            too_large: Any = pc.greater(pc.binary_length(records), pa.scalar(limit))
            if pc.any(too_large).as_py():
                rejection = RecordRejection(
                    "",
                    ErrorClass.PAYLOAD_TOO_LARGE,
                    f"the record is larger than the destination accepts ({limit:,} bytes)",
                )
                big = [i for i, b in enumerate(too_large.to_pylist()) if b and i not in at]
                at.update(dict.fromkeys(big, rejection))
        return self._set_aside(batch, at) if at else batch

    def _set_aside(self, batch: OutboundBatch, at: dict[int, RecordRejection]) -> OutboundBatch:
        """Fail the records at these positions and send the others."""
        self._record_failures(batch.records, at)
        self.on_progress(len(at))
        keep = pa.array([i not in at for i in range(len(batch))])
        return batch.with_records(batch.records.filter(keep))

    async def _settle(self, batch: OutboundBatch, answer: Acknowledged) -> None:
        records = batch.records
        if rejected_at := answer.rejected_at:
            mask = pa.array([i not in rejected_at for i in range(records.num_rows)])
            self._record_failures(records, rejected_at)
            records = records.filter(mask)
        if records.num_rows:
            async with self._journaling:
                # Stopping, the run still waits for the append: the journal is closed after it,
                # never mid-write.
                if self.journal.remote:
                    await _in_thread(self.journal.append, records)
                else:
                    self.journal.append(records)
            if self.sent is not None:
                self.sent.write(records, [None] * records.num_rows)
            for op, n in _count_ops(records).items():
                self.counts.count_loaded(op, n)
        self.on_progress(batch.records.num_rows)

    def _fail_all(self, batch: OutboundBatch, error: DestinationError) -> None:
        # The error may echo any record of the batch, and becomes the run's error if it stops
        # the run: masked with the whole batch's sensitive values.
        redact = self._redactor(batch.records)
        error = dataclasses.replace(
            error,
            message=redact.cut_off(error.message),  # a body excerpt may end mid-secret
            code=redact(error.code) if error.code is not None else None,
        )
        rejection = RecordRejection(
            "", error.error_class, error.message, error.code, error.http_status
        )
        at = dict.fromkeys(range(len(batch)), rejection)
        self._record_failures(batch.records, at, redact)
        if error.error_class not in _SPLITTABLE:
            self._failing_in_a_row += 1
        if error.error_class.fatal or self._failing_in_a_row >= self.settings.give_up_after:
            # Bad credentials, or a destination that refuses whole batches several times in a
            # row (down, wrong endpoint, missing table): the rest would fail the same way, so
            # stop and leave it unsent for the next sync.
            self.fatal = error
        self.on_progress(len(batch))

    def _redactor(self, records: pa.RecordBatch) -> Redactor:
        """Masks secrets and the sensitive values of every record of the batch: an answer
        about one record may quote another."""
        if not self.mapping.sensitive:
            return self.redact
        payloads = map(str, records.column(RECORD_COLUMN).to_pylist())
        return batch_redactor(payloads, self.mapping.sensitive, self.redact)

    def _record_failures(
        self,
        records: pa.RecordBatch,
        at: dict[int, RecordRejection],
        redact: Redactor | None = None,
    ) -> None:
        redact = redact or self._redactor(records)
        keys = records.column(KEY_COLUMN)
        ops = records.column(OP_COLUMN)
        payloads = records.column(RECORD_COLUMN)
        texts: dict[str, str] = {}  # a batch's failures often share one message

        def masked(text: str | None) -> str | None:
            if text is None:
                return None
            if text not in texts:
                texts[text] = redact.cut_off(text)
            return texts[text]

        failures = [
            RecordFailure(
                key=str(keys[i]),
                operation=Operation(str(ops[i])),
                error_class=r.error_class,
                message=masked(r.message) or "",
                code=masked(r.code),
                http_status=r.http_status,
                payload=payload_sample(str(payloads[i]), self.mapping.sensitive, redact),
            )
            for i, r in at.items()
        ]
        for failure in failures:
            self.counts.count_failed(failure.error_class, 1)
        if self.sent is not None:
            positions = list(at)
            self.sent.write(
                records.take(pa.array(positions, pa.int64())),
                [str(at[i].error_class) for i in positions],
            )
        self.on_failures(failures)


def _count_ops(records: pa.RecordBatch) -> dict[Operation, int]:
    # A Counter over a few hundred short strings beats a compute kernel's call overhead.
    return {
        Operation(str(op)): n for op, n in Counter(records.column(OP_COLUMN).to_pylist()).items()
    }


def _by_request_bytes(batch: OutboundBatch, limit: int | None) -> list[OutboundBatch]:
    """Consecutive parts of `batch` whose records' JSON sums to at most `limit` bytes (a
    record over the limit alone goes alone; the destination refuses it, and it fails alone)."""
    import pyarrow.compute as pc

    if limit is None:
        return [batch]
    records: Any = batch.records.column(RECORD_COLUMN)
    sizes: Any = pc.binary_length(records)
    if pc.sum(sizes).as_py() <= limit:
        return [batch]
    parts, start, total = [], 0, 0
    for i, size in enumerate(sizes.to_pylist()):
        if total + size > limit and i > start:
            parts.append((start, i - start))
            start, total = i, 0
        total += size
    parts.append((start, len(batch) - start))
    return [
        dataclasses.replace(
            batch, records=batch.records.slice(offset, length), part=f"{batch.part}.b{n}"
        )
        for n, (offset, length) in enumerate(parts, 1)
    ]


def _joined(parts: list[OutboundBatch]) -> OutboundBatch:
    records = pa.concat_batches([part.records for part in parts])  # type: ignore[attr-defined]
    return dataclasses.replace(parts[0], records=records, part=f"{parts[0].part}.r")


def _marked_too_large(records: pa.RecordBatch) -> dict[int, RecordRejection]:
    """The rows the snapshot store set aside as too large, each with its reason."""
    if TOO_LARGE_COLUMN not in records.schema.names:
        return {}
    reasons: Any = records.column(TOO_LARGE_COLUMN)
    if reasons.null_count == len(reasons):
        return {}
    return {
        i: RecordRejection("", ErrorClass.PAYLOAD_TOO_LARGE, str(reason))
        for i, reason in enumerate(reasons.to_pylist())
        if reason is not None
    }


def _reraise(done: set[asyncio.Task[None]]) -> None:
    """The first error of the finished tasks; every task's error is retrieved (several
    batches can fail at once, e.g. on a full disk)."""
    errors = [task.exception() for task in done if not task.cancelled()]
    for error in errors:
        if error is not None:
            raise error


async def _in_thread(work: Callable[..., _T], *args: Any) -> _T:
    """`work(*args)` on a worker thread; cancelled meanwhile (Ctrl-C, SIGTERM), this waits for
    the thread to finish before the cancel goes on.

    Python 3.11 cancels the future of a thread it cannot stop, and when the thread's result
    arrives after that, asyncio prints an AssertionError traceback ("Exception in callback
    _chain_future…"); the thread's work (a DuckDB batch, a journal write) is short.
    """
    running = asyncio.ensure_future(asyncio.to_thread(work, *args))
    try:
        return await asyncio.shield(running)
    except asyncio.CancelledError:
        await asyncio.wait([running])
        if not running.cancelled():
            running.exception()  # read, so a failure of it is not printed as "never retrieved"
        raise
