"""Salesforce: upsert by external ID through sObject Collections (200 records a request), or
through a Bulk API 2.0 ingest job for a batch of `bulk_threshold` records or more; deletes
resolve the external IDs to record Ids with SOQL, then delete through sObject Collections.

The model's primary key is the record's external ID (`external_id_field`), so a deleted row,
which carries only its key, can still be found. See docs/destinations/salesforce.md.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any, cast
from urllib.parse import quote, urlencode

from pydantic import Field, HttpUrl, model_validator

from ebbtide.config.models import DeclaredField, DestinationConfig, SyncMode
from ebbtide.destinations.http import HttpAnswer, HttpClient, http_error, json_text, malformed
from ebbtide.errors import DestinationError, ErrorClass
from ebbtide.ports import (
    KEY_COLUMN,
    RECORD_COLUMN,
    ActionSpec,
    AdapterContext,
    BatchResult,
    DestinationPlugin,
    FieldSpec,
    OutboundBatch,
    RecordRejection,
)

log = logging.getLogger(__name__)

COLLECTION_SIZE = 200  # records (or ids) per sObject Collections request
_NAME = r"^[A-Za-z][A-Za-z0-9_]*$"
_QUERY_CHARS = 6000  # a SOQL query's URL stays well under the 16,384 characters allowed
_USAGE_WARNING = 0.9  # share of the org's daily API requests used before a warning

# A whole request refused for what the mapping or the configuration names (an unknown field
# or object, a field that is not an external ID): every batch would fail the same way, so
# the engine does not split it to look for a bad record.
_MAPPING_CODES = frozenset({"INVALID_FIELD", "INVALID_TYPE", "INVALIDJOB", "NOT_FOUND"})
_PERMISSION_CODES = frozenset(
    {
        "INSUFFICIENT_ACCESS",
        "INSUFFICIENT_ACCESS_OR_READONLY",
        "INSUFFICIENT_ACCESS_ON_CROSS_REFERENCE_ENTITY",
        "INVALID_FIELD_FOR_INSERT_UPDATE",
        "API_DISABLED_FOR_ORG",
        "API_CURRENTLY_DISABLED",
        "FUNCTIONALITY_NOT_ENABLED",
    }
)
_RECORD_CLASSES = {
    "DUPLICATE_VALUE": ErrorClass.CONFLICT,
    "DUPLICATES_DETECTED": ErrorClass.CONFLICT,
    "DUPLICATE_EXTERNAL_ID": ErrorClass.CONFLICT,
    "ENTITY_IS_DELETED": ErrorClass.NOT_FOUND,
    "UNABLE_TO_LOCK_ROW": ErrorClass.SERVER_ERROR,
    "INVALID_SESSION_ID": ErrorClass.AUTH,
    **dict.fromkeys(_PERMISSION_CODES, ErrorClass.PERMISSION),
}
_RATE_LIMIT = "REQUEST_LIMIT_EXCEEDED"


class SalesforceConfig(DestinationConfig):
    secret_settings = ("access_token", "client_secret", "refresh_token")

    instance_url: HttpUrl  # https://yourdomain.my.salesforce.com
    api_version: str = Field(default="v62.0", pattern=r"^v\d{2,3}\.0$")
    object: str = Field(pattern=_NAME)  # the sObject: Contact, Lead, Account, Customer__c …
    external_id_field: str = Field(pattern=_NAME)  # holds the model's primary key
    access_token: str | None = Field(default=None, repr=False)
    client_id: str | None = Field(default=None, repr=False)
    client_secret: str | None = Field(default=None, repr=False)
    refresh_token: str | None = Field(default=None, repr=False)
    login_url: HttpUrl | None = None  # where tokens are issued; the instance_url by default
    timeout_s: float = Field(default=120.0, gt=0)
    bulk_threshold: int = Field(default=2_000, ge=1)
    bulk_poll_s: float = Field(default=2.0, gt=0)
    bulk_timeout_s: float = Field(default=3_600.0, gt=0)
    # REQUEST_LIMIT_EXCEEDED says no when to try again: the run waits this long, then retries.
    request_limit_wait_s: float = Field(default=5.0, ge=0, le=600)
    fields: list[DeclaredField] | None = None
    # Bulk API 2.0 splits a job into batches of 10,000 records: one job per batch at most.
    batch_size: int = Field(default=10_000, ge=1, le=10_000)
    # Bulk API 2.0: at most 400,000 characters a record and 150 MB an upload (100 MB once
    # base64-encoded, which the limit is quoted as for some orgs).
    max_record_bytes: int | None = Field(default=400_000, ge=1, le=400_000)
    max_request_bytes: int | None = Field(default=100_000_000, ge=1, le=100_000_000)

    @model_validator(mode="after")
    def _credentials(self) -> SalesforceConfig:
        if self.access_token is None and self.client_id is None:
            raise ValueError(
                "give access_token, or client_id with client_secret (client credentials"
                " flow) or with refresh_token (refresh token flow)"
            )
        if self.client_id is not None and not (self.client_secret or self.refresh_token):
            raise ValueError("client_id needs client_secret or refresh_token")
        return self


@dataclass(frozen=True)
class _Item:
    key: str  # the record's key, as the batch's key column has it
    external_id: str
    data: dict[str, Any]


class _Tokens:
    """The access token in use; with client_id set, a fresh one is fetched when refused."""

    def __init__(self, config: SalesforceConfig, client: HttpClient) -> None:
        self._config, self._client = config, client
        self._token = config.access_token
        self._lock = asyncio.Lock()

    @property
    def renewable(self) -> bool:
        return self._config.client_id is not None

    async def current(self) -> str:
        return self._token if self._token is not None else await self.renew(None)

    async def renew(self, stale: str | None) -> str:
        async with self._lock:
            if self._token is not None and self._token != stale:
                return self._token  # renewed meanwhile by another request
            self._token = await self._grant()
            return self._token

    async def _grant(self) -> str:
        config = self._config
        form = {"client_id": config.client_id or ""}
        if config.refresh_token:
            form.update(grant_type="refresh_token", refresh_token=config.refresh_token)
        else:
            form["grant_type"] = "client_credentials"
        if config.client_secret:
            form["client_secret"] = config.client_secret
        base = str(config.login_url or config.instance_url).rstrip("/")
        answer = await self._client.request(
            "POST",
            f"{base}/services/oauth2/token",
            body=urlencode(form).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        if not answer.ok:
            raise _token_refused(answer, form["grant_type"])
        token = answer.json("an OAuth token answer")
        if not isinstance(token, dict) or not isinstance(token.get("access_token"), str):
            raise malformed("an OAuth token answer", "it has no access_token", "")
        return cast(str, token["access_token"])


def _token_refused(answer: HttpAnswer, grant: str) -> DestinationError:
    try:
        body = json.loads(answer.text)
        reason = f"{body.get('error')}: {body.get('error_description')}"
    except (ValueError, AttributeError):
        reason = " ".join(answer.text.split())[:200]
    error_class = ErrorClass.SERVER_ERROR if answer.status >= 500 else ErrorClass.AUTH
    return http_error(
        answer, message=f"the OAuth {grant} grant was refused ({reason})", error_class=error_class
    )


class SalesforceDestination:
    """One org, one object: upserts by external ID, deletes by the Ids those resolve to."""

    def __init__(self, config: SalesforceConfig) -> None:
        self.config = config
        self._client = HttpClient(
            str(config.instance_url), timeout_s=config.timeout_s, concurrency=config.concurrency
        )
        self._tokens = _Tokens(config, self._client)
        self._api = f"services/data/{config.api_version}"
        self._warned = False

    async def open(self) -> None:
        await self._client.open()

    async def close(self) -> None:
        await self._client.close()

    async def call(
        self, method: str, path: str, *, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> HttpAnswer:
        """One authenticated request; a refused token is renewed once when it can be."""
        token = await self._tokens.current()
        answer = await self._client.request(
            method, path, headers={**(headers or {}), "Authorization": f"Bearer {token}"}, **kwargs
        )
        if answer.status == 401 and self._tokens.renewable:
            token = await self._tokens.renew(token)
            answer = await self._client.request(
                method,
                path,
                headers={**(headers or {}), "Authorization": f"Bearer {token}"},
                **kwargs,
            )
        self._note_usage(answer)
        return answer

    def _note_usage(self, answer: HttpAnswer) -> None:
        """The daily allowance is a rolling 24 hours: pausing a run for it would not help,
        so a run only warns when the org has used most of it (a refusal is retried)."""
        used = api_usage(answer.headers.get("Sforce-Limit-Info"))
        if used is not None and not self._warned and used[0] >= used[1] * _USAGE_WARNING:
            self._warned = True
            used_text, allowed_text = (f"{n:,}" for n in used)
            log.warning(
                "Salesforce org has used %s of its %s daily API requests", used_text, allowed_text
            )

    async def send(self, batch: OutboundBatch) -> BatchResult:
        try:
            return await self._send(batch)
        except DestinationError as error:
            if error.error_class is ErrorClass.RATE_LIMITED and error.retry_after is None:
                raise replace(error, retry_after=self.config.request_limit_wait_s) from None
            raise

    async def _send(self, batch: OutboundBatch) -> BatchResult:
        keys = cast(list[str], batch.records.column(KEY_COLUMN).to_pylist())
        texts = cast(list[str], batch.records.column(RECORD_COLUMN).to_pylist())
        rejected: list[RecordRejection] = []
        upserts: list[_Item] = []
        deletes: list[_Item] = []
        for key, text in zip(keys, texts, strict=True):
            record = json.loads(text, parse_float=Decimal)
            data = record.get("data") or {}
            external_id, problem = self._external_id(key, data)
            if problem is not None:
                rejected.append(RecordRejection(key, ErrorClass.MAPPING, problem))
                continue
            item = _Item(key, cast(str, external_id), data)
            (deletes if record["op"] == "deleted" else upserts).append(item)
        if len(upserts) >= self.config.bulk_threshold:
            rejected += await self._bulk_upsert(upserts)
        elif upserts:
            rejected += await self._collections_upsert(upserts)
        if deletes:
            rejected += await self._delete(deletes)
        return BatchResult(rejected=tuple(rejected))

    def _external_id(self, key: str, data: dict[str, Any]) -> tuple[str | None, str | None]:
        """The external ID the key stands for, or why the record cannot be sent."""
        field = self.config.external_id_field
        value = json.loads(key, parse_float=Decimal)
        if isinstance(value, dict | list):
            return None, (
                f"{field}: a Salesforce external ID is one value, and the model's primary key"
                " has several columns: give the model a one-column key (concatenate them)"
            )
        external_id = value if isinstance(value, str) else key
        if not external_id.strip():
            return None, f"{field}: the record's key is empty, and Salesforce matches on it"
        mapped = data.pop(field, None)
        if mapped is not None and cell(mapped) != external_id:
            return None, (
                f"{field} is filled from the record's key ({external_id!r}); the mapping gives"
                f" it {cell(mapped)!r}: leave it out of the mapping"
            )
        return external_id, None

    # -- sObject Collections ----------------------------------------------------------------

    async def _collections_upsert(self, items: list[_Item]) -> list[RecordRejection]:
        config = self.config
        path = f"{self._api}/composite/sobjects/{config.object}/{config.external_id_field}"
        rejected = []
        for chunk in chunks(items, COLLECTION_SIZE):
            records = ",".join(self._sobject(item) for item in chunk)
            body = f'{{"allOrNone":false,"records":[{records}]}}'.encode()
            answer = await self.call(
                "PATCH", path, body=body, headers={"Content-Type": "application/json"}
            )
            if not answer.ok:
                raise refusal(answer)
            results = _results(answer, len(chunk))
            rejected += [
                r
                for item, result in zip(chunk, results, strict=True)
                if (r := _outcome(item, result)) is not None
            ]
        return rejected

    def _sobject(self, item: _Item) -> str:
        """The record as Collections take it; `Account.External_Id__c` (a lookup set by the
        parent's external ID) becomes `"Account": {"External_Id__c": …}`."""
        fields = [
            f'"attributes":{{"type":{json.dumps(self.config.object)}}}',
            f"{json.dumps(self.config.external_id_field)}:{json.dumps(item.external_id)}",
        ]
        parents: dict[str, list[str]] = {}
        for name, value in item.data.items():
            relation, dot, parent_field = name.partition(".")
            if dot:
                parents.setdefault(relation, []).append(
                    f"{json.dumps(parent_field)}:{_json_value(value)}"
                )
            else:
                fields.append(f"{json.dumps(name)}:{_json_value(value)}")
        fields += [f"{json.dumps(r)}:{{{','.join(p)}}}" for r, p in parents.items()]
        return "{" + ",".join(fields) + "}"

    # -- deletes ------------------------------------------------------------------------------

    async def _delete(self, items: list[_Item]) -> list[RecordRejection]:
        """Ids by SOQL, then DELETE; a key Salesforce no longer has is deleted already."""
        found = await self._record_ids([item.external_id for item in items])
        pairs = [(item, i) for item in items for i in _matches(found, item.external_id)]
        rejected: dict[str, RecordRejection] = {}
        for chunk in chunks(pairs, COLLECTION_SIZE):
            ids = ",".join(record_id for _, record_id in chunk)
            answer = await self.call(
                "DELETE",
                f"{self._api}/composite/sobjects",
                params={"ids": ids, "allOrNone": "false"},
            )
            if not answer.ok:
                raise refusal(answer)
            for (item, _), result in zip(chunk, _results(answer, len(chunk)), strict=True):
                rejection = _outcome(item, result, gone_is_done=True)
                if rejection is not None:
                    rejected.setdefault(item.key, rejection)
        return list(rejected.values())

    async def _record_ids(self, external_ids: list[str]) -> dict[str, list[str]]:
        field = self.config.external_id_field
        found: dict[str, list[str]] = {}
        for group in _query_groups(external_ids):
            values = ",".join(soql_text(v) for v in group)
            query = f"SELECT Id, {field} FROM {self.config.object} WHERE {field} IN ({values})"
            path: str | None = f"{self._api}/query"
            params: dict[str, str] | None = {"q": query}
            while path is not None:
                answer = await self.call("GET", path, params=params)
                if not answer.ok:
                    raise refusal(answer)
                page = answer.json("a SOQL query result")
                if not isinstance(page, dict) or not isinstance(page.get("records"), list):
                    raise malformed("a SOQL query result", "it has no records", answer.text)
                for row in page["records"]:
                    found.setdefault(str(row.get(field)), []).append(str(row["Id"]))
                path = None if page.get("done", True) else page.get("nextRecordsUrl")
                params = None  # the next page's URL holds its query
        return found

    # -- Bulk API 2.0 -------------------------------------------------------------------------

    async def _bulk_upsert(self, items: list[_Item]) -> list[RecordRejection]:
        config = self.config
        job = await self._json(
            "POST",
            f"{self._api}/jobs/ingest",
            {
                "object": config.object,
                "externalIdFieldName": config.external_id_field,
                "operation": "upsert",
                "contentType": "CSV",
                "lineEnding": "LF",
            },
        )
        job_id = str(job.get("id") or "")
        if not job_id:
            raise malformed("a Bulk API job", "it has no id", json.dumps(job)[:200])
        try:
            await self._upload(job_id, items)
            info = await self._until_done(job_id)
        except (DestinationError, asyncio.CancelledError):
            await self._abort(job_id)
            raise
        if info.get("state") != "JobComplete":
            raise job_failed(job_id, info)
        failed = await self._result_rows(job_id, "failedResults")
        succeeded = await self._result_rows(job_id, "successfulResults")
        return bulk_outcomes(job_id, items, config.external_id_field, failed, succeeded)

    async def _upload(self, job_id: str, items: list[_Item]) -> None:
        body = bulk_csv(self.config.external_id_field, items).encode()
        path = f"{self._api}/jobs/ingest/{job_id}"
        answer = await self.call(
            "PUT", f"{path}/batches", body=body, headers={"Content-Type": "text/csv"}
        )
        if not answer.ok:
            raise refusal(answer)
        await self._json("PATCH", path, {"state": "UploadComplete"})

    async def _until_done(self, job_id: str) -> dict[str, Any]:
        """Polls the job, waiting a little longer each time (at most 30 s between polls)."""
        loop = asyncio.get_running_loop()
        deadline, wait = loop.time() + self.config.bulk_timeout_s, self.config.bulk_poll_s
        while True:
            info = await self._json("GET", f"{self._api}/jobs/ingest/{job_id}")
            if info.get("state") in ("JobComplete", "Failed", "Aborted"):
                return info
            if loop.time() + wait > deadline:
                raise DestinationError(
                    ErrorClass.TIMEOUT,
                    f"Bulk API job {job_id} was still {info.get('state')} after"
                    f" {self.config.bulk_timeout_s:g}s (bulk_timeout_s); it was aborted",
                )
            await asyncio.sleep(wait)
            wait = min(wait * 1.5, max(self.config.bulk_poll_s, 30.0))

    async def _abort(self, job_id: str) -> None:
        """Best effort: a job left open would count against the org's open jobs."""
        try:
            await self.call(
                "PATCH",
                f"{self._api}/jobs/ingest/{job_id}",
                body=b'{"state":"Aborted"}',
                headers={"Content-Type": "application/json"},
            )
        except DestinationError:
            log.info("could not abort Bulk API job %s", job_id)

    async def _result_rows(self, job_id: str, kind: str) -> list[dict[str, str]]:
        answer = await self.call("GET", f"{self._api}/jobs/ingest/{job_id}/{kind}/")
        if not answer.ok:
            raise refusal(answer)
        if not answer.whole:
            raise malformed(f"the job's {kind} CSV", "it is too large", answer.text)
        return list(csv.DictReader(io.StringIO(answer.text)))

    async def _json(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        answer = await self.call(method, path, json_body=body)
        if not answer.ok:
            raise refusal(answer)
        found = answer.json("a Bulk API job")
        if not isinstance(found, dict):
            raise malformed("a Bulk API job", "it is not an object", answer.text)
        return found


# -- what the requests carry -------------------------------------------------------------------


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def cell(value: Any) -> str:
    """A value as Salesforce text: an object or an array as its JSON (fields are flat)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json_text(value)
    return str(value)


def _json_value(value: Any) -> str:
    """JSON keeping every digit of a decimal; an object or array goes as its JSON text, the
    value a Long Text Area field holds (Salesforce fields take no nested values)."""
    if isinstance(value, dict | list):
        return json.dumps(json_text(value))
    return json_text(value)


def bulk_csv(external_id_field: str, items: list[_Item]) -> str:
    """The job's CSV: a null clears the field (#N/A); a field a record lacks is left as is."""
    columns = list(dict.fromkeys(name for item in items for name in item.data))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([external_id_field, *columns])
    for item in items:
        row = [item.external_id]
        for name in columns:
            value = item.data.get(name, _ABSENT)
            row.append("" if value is _ABSENT else "#N/A" if value is None else cell(value))
        writer.writerow(row)
    return out.getvalue()


_ABSENT = object()


def soql_text(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


def _query_groups(values: list[str]) -> Iterator[list[str]]:
    group: list[str] = []
    size = 0
    for value in values:
        length = len(quote(soql_text(value), safe="")) + 3
        if group and (size + length > _QUERY_CHARS or len(group) >= COLLECTION_SIZE):
            yield group
            group, size = [], 0
        group.append(value)
        size += length
    if group:
        yield group


def _matches(found: dict[str, list[str]], external_id: str) -> list[str]:
    """The Ids of the records holding this external ID; text external IDs compare without
    regard to case unless the field says otherwise, so an exact match is preferred."""
    if external_id in found:
        return found[external_id]
    folded = external_id.casefold()
    return [i for value, ids in found.items() if value.casefold() == folded for i in ids]


# -- what Salesforce answered ----------------------------------------------------------------


def api_usage(header: str | None) -> tuple[int, int] | None:
    """`Sforce-Limit-Info: api-usage=25/15000` as (used, allowed)."""
    for part in (header or "").split(","):
        name, _, value = part.strip().partition("=")
        used, _, allowed = value.partition("/")
        if name == "api-usage" and used.isdigit() and allowed.isdigit() and int(allowed):
            return int(used), int(allowed)
    return None


def _errors(text: str) -> list[dict[str, Any]]:
    """Salesforce's error list `[{"errorCode": …, "message": …}]` (or one such object)."""
    try:
        body = json.loads(text)
    except ValueError:
        return []
    body = body if isinstance(body, list) else [body]
    return [e for e in body if isinstance(e, dict)]


def refusal(answer: HttpAnswer) -> DestinationError:
    """A non-2xx answer as its error class: REQUEST_LIMIT_EXCEEDED is a rate limit (retried),
    a mapping's unknown field or object is not worth splitting the batch for."""
    errors = _errors(answer.text)
    first = errors[0] if errors else {}
    code = str(first.get("errorCode") or first.get("statusCode") or "") or None
    message = first.get("message")
    error_class: ErrorClass | None = None
    if code == _RATE_LIMIT:
        error_class = ErrorClass.RATE_LIMITED
    elif answer.status == 401 or code == "INVALID_SESSION_ID":
        error_class = ErrorClass.AUTH
    elif code in _PERMISSION_CODES or answer.status == 403:
        error_class = ErrorClass.PERMISSION
    elif code in _MAPPING_CODES and answer.status == 400:
        error_class = ErrorClass.MAPPING
    text = f"{code}: {message}" if code and isinstance(message, str) else None
    error = http_error(answer, message=text, error_class=error_class)
    return replace(error, code=code) if code else error


def _results(answer: HttpAnswer, expected: int) -> list[dict[str, Any]]:
    what = "sObject Collections results"
    results = answer.json(what)
    if not isinstance(results, list) or len(results) != expected:
        raise malformed(what, f"it is not a list of {expected} results", answer.text)
    for result in results:
        if not isinstance(result, dict) or not isinstance(result.get("success"), bool):
            raise malformed(what, 'a result has no "success": true or false', answer.text)
    return results


def _outcome(
    item: _Item, result: dict[str, Any], *, gone_is_done: bool = False
) -> RecordRejection | None:
    if result["success"]:
        return None
    errors = [e for e in result.get("errors") or [] if isinstance(e, dict)]
    first = errors[0] if errors else {}
    code = str(first.get("statusCode") or "UNKNOWN")
    if gone_is_done and code == "ENTITY_IS_DELETED":
        return None
    if code == _RATE_LIMIT:  # not the record's fault: the whole batch is retried
        raise DestinationError(ErrorClass.RATE_LIMITED, f"{code}: {first.get('message')}", code)
    fields = first.get("fields") or []
    message = str(first.get("message") or "refused by Salesforce")
    if fields and isinstance(fields, list):
        message += f" (fields: {', '.join(map(str, fields))})"
    return _rejection(item.key, code, message)


def _rejection(key: str, code: str, message: str) -> RecordRejection:
    return RecordRejection(key, _RECORD_CLASSES.get(code, ErrorClass.VALIDATION), message, code)


def job_failed(job_id: str, info: dict[str, Any]) -> DestinationError:
    """A job Failed or Aborted as a whole: retried, unless its message blames the data."""
    state, reason = info.get("state"), str(info.get("errorMessage") or "no errorMessage")
    error_class = ErrorClass.SERVER_ERROR
    if "Field name not found" in reason or "is not an External Id" in reason:
        error_class = ErrorClass.MAPPING
    elif reason.startswith(("InvalidBatch", "ClientInputError")):
        error_class = ErrorClass.VALIDATION
    return DestinationError(error_class, f"Bulk API job {job_id} {state}: {reason}", code=state)


def bulk_outcomes(
    job_id: str,
    items: list[_Item],
    field: str,
    failed: list[dict[str, str]],
    succeeded: list[dict[str, str]],
) -> list[RecordRejection]:
    """Each record by its external ID column: failed, succeeded, or never reported."""
    by_id = {item.external_id: item for item in items}
    done = {row.get(field) for row in succeeded}
    rejected: dict[str, RecordRejection] = {}
    for row in failed:
        item = by_id.get(row.get(field) or "")
        if item is None:  # its record is in neither list: it fails below, as unreported
            log.warning("Bulk API job %s: a failed result names no record sent", job_id)
            continue
        code, _, message = (row.get("sf__Error") or "UNKNOWN").partition(":")
        if code == _RATE_LIMIT:
            raise DestinationError(ErrorClass.RATE_LIMITED, f"{code}: {message}", code)
        rejected[item.key] = _rejection(item.key, code, message.removesuffix(" --").strip())
    for item in items:
        if item.key not in rejected and item.external_id not in done:
            rejected[item.key] = RecordRejection(
                item.key,
                ErrorClass.SERVER_ERROR,
                f"Bulk API job {job_id} reported no result for this record",
            )
    return list(rejected.values())


# -- the plugin ----------------------------------------------------------------------------------


async def check(config: SalesforceConfig, context: AdapterContext) -> str:
    """The org's API allowance (GET /limits) and the external ID field (describe)."""
    destination = SalesforceDestination(config)
    api = f"services/data/{config.api_version}"
    try:
        limits = await _described(destination, f"{api}/limits", "Salesforce's limits")
        described = await _described(
            destination, f"{api}/sobjects/{config.object}/describe", "an sObject description"
        )
    finally:
        await destination.close()
    daily = limits.get("DailyApiRequests") or {}
    fields = described.get("fields") or []
    field = next((f for f in fields if f.get("name") == config.external_id_field), None)
    if field is None or not (field.get("externalId") or field.get("idLookup")):
        state = "does not exist" if field is None else "is not an External ID field"
        raise DestinationError(
            ErrorClass.MAPPING, f"{config.object}.{config.external_id_field} {state}"
        )
    return (
        f"org {config.instance_url.host}: {daily.get('Remaining')} of {daily.get('Max')} daily"
        f" API requests left; {config.object}.{config.external_id_field} is an external ID"
    )


async def _described(destination: SalesforceDestination, path: str, what: str) -> dict[str, Any]:
    answer = await destination.call("GET", path)
    if not answer.ok:
        raise refusal(answer)
    found = answer.json(what)
    if not isinstance(found, dict):
        raise malformed(what, "it is not an object", answer.text)
    return found


ACTIONS = {
    "upsert": ActionSpec(
        "upsert",
        "Create or update records of the configured object by external ID (the model's key);"
        " in mirror mode, delete those whose rows are gone.",
        modes=frozenset({SyncMode.UPSERT, SyncMode.INSERT, SyncMode.MIRROR}),
        field_columns=False,
    ),
}


def _build(config: SalesforceConfig, context: AdapterContext) -> SalesforceDestination:
    return SalesforceDestination(config)


def _describe(config: SalesforceConfig, action: ActionSpec) -> ActionSpec:
    if config.fields is None:
        return action
    declared = tuple(FieldSpec.declared(f) for f in config.fields)
    return replace(action, fields=tuple(f for f in declared if f.name != config.external_id_field))


PLUGIN = DestinationPlugin(
    config=SalesforceConfig, actions=ACTIONS, build=_build, describe=_describe, check=check
)
