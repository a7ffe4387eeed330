"""Salesforce's REST API as ebbtide uses it, written from Salesforce's public documentation:
sObject Collections upsert (by external ID) and delete (by Id), SOQL `query` for Ids by
external ID, Bulk API 2.0 ingest jobs (create, upload CSV, UploadComplete, state, failed and
successful results), `limits`, `describe`, the OAuth 2.0 token endpoint, error lists
`[{"errorCode", "message"}]`, and the `Sforce-Limit-Info: api-usage=n/max` header.

The org holds one object, Contact, with a few standard and custom fields (lengths, required,
unique and external ID as Salesforce has them) so that per-record errors are Salesforce's own:
REQUIRED_FIELD_MISSING, STRING_TOO_LONG, INVALID_EMAIL_ADDRESS, DUPLICATE_VALUE, …
"""

from __future__ import annotations

import csv
import io
import itertools
import re
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from aiohttp import web

from tests.conformance.case import DestinationCase, Seen
from tests.emulators.base import Emulator

VERSION = re.compile(r"v(4[6-9]|5\d|6[0-6])\.0")
MAX_RECORDS = 200
MAX_UPLOAD_BYTES = 150_000_000
BULK_UPLOAD = re.compile(r"/services/data/v\d+\.0/jobs/ingest/[^/]+/batches")


@dataclass(frozen=True)
class Column:
    kind: str  # id, string, email, textarea, double, boolean, date
    length: int = 255
    required: bool = False  # on create (nillable false, no default)
    external_id: bool = False
    unique: bool = False


ACCOUNT = {
    "Id": Column("id", 18),
    "External_Id__c": Column("string", 255, external_id=True, unique=True),
    "Name": Column("string", 255, required=True),
}
CONTACT = {
    "Id": Column("id", 18),
    "AccountId": Column("reference", 18),  # the lookup; relationship name "Account"
    "External_Id__c": Column("string", 255, external_id=True, unique=True),
    "FirstName": Column("string", 40),
    "LastName": Column("string", 80, required=True),
    "Email": Column("email", 80),
    "Title": Column("string", 128),
    "Phone": Column("string", 40),
    "Description": Column("textarea", 32_000),
    "Profile_JSON__c": Column("textarea", 131_072),
    "Orders_JSON__c": Column("textarea", 131_072),
    "Member_Code__c": Column("string", 20, unique=True),
    "Lifetime_Value__c": Column("double"),
    "Is_Active__c": Column("boolean"),
    "Birthdate": Column("date"),
}


TEXT = Column("string")  # a parent's external ID, in a relationship column


class RecordError(Exception):
    """One record refused: Salesforce's statusCode, message and fields."""

    def __init__(self, code: str, message: str, fields: list[str] | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.fields = code, message, fields or []


class Refused(Exception):
    """A whole request refused: HTTP status and Salesforce's errorCode."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class Job:
    id: str
    object: str
    operation: str
    external_id: str | None
    state: str = "Open"
    uploads: list[str] = field(default_factory=list)
    polls: int = 0
    error_message: str | None = None
    columns: list[str] = field(default_factory=list)
    failed: list[tuple[str, str, list[str]]] = field(default_factory=list)  # id, error, row
    succeeded: list[tuple[str, bool, list[str]]] = field(default_factory=list)  # id, created
    unprocessed: list[list[str]] = field(default_factory=list)


class SalesforceEmulator(Emulator):
    """An org: Contacts by Id, Bulk API jobs, issued OAuth tokens, the daily API count."""

    name = "salesforce"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.objects: dict[str, dict[str, Column]] = {"Contact": CONTACT, "Account": ACCOUNT}
        self.records: dict[str, dict[str, dict[str, Any]]] = {"Contact": {}, "Account": {}}
        # (object, field) → value → ids of the records holding it (see _holders)
        self._index: dict[tuple[str, str], dict[Any, set[str]]] = {}
        # object → relationship name → (parent object, lookup field)
        self.relations = {"Contact": {"Account": ("Account", "AccountId")}}
        self.jobs: dict[str, Job] = {}
        self.api_max = 15_000
        self.api_used = 0
        self.polls_to_complete = 2  # GETs of an UploadComplete job before it is done
        self.job_failures: deque[str] = deque()  # errorMessages: the next jobs fail midway
        # value → (statusCode, message): a record holding the value is refused with it.
        self.record_errors: dict[str, tuple[str, str]] = {}
        self.clients: dict[str, str] = {}  # OAuth client_id → client_secret
        self.refresh_tokens: dict[str, str] = {}  # refresh token → client_id
        self.token_uses: int | None = None  # an issued token expires after this many requests
        self.issued: dict[str, int] = {}  # issued token → requests it authorized
        self._ids = itertools.count(1)

    # -- the framework's hooks --------------------------------------------------------------

    def routes(self, app: web.Application) -> None:
        data = "/services/data/{version}"
        app.router.add_patch(f"{data}/composite/sobjects/{{object}}/{{field}}", self._upsert)
        app.router.add_delete(f"{data}/composite/sobjects", self._delete)
        app.router.add_get(f"{data}/query", self._query)
        app.router.add_get(f"{data}/limits", self._limits)
        app.router.add_get(f"{data}/sobjects/{{object}}/describe", self._describe)
        app.router.add_post(f"{data}/jobs/ingest", self._create_job)
        app.router.add_put(f"{data}/jobs/ingest/{{job}}/batches", self._upload)
        app.router.add_patch(f"{data}/jobs/ingest/{{job}}", self._job_state)
        app.router.add_get(f"{data}/jobs/ingest/{{job}}", self._job_info)
        for kind in ("failedResults", "successfulResults"):
            app.router.add_get(f"{data}/jobs/ingest/{{job}}/{kind}/", self._results)
            app.router.add_get(f"{data}/jobs/ingest/{{job}}/{kind}", self._results)
        app.router.add_post("/services/oauth2/token", self._token)

    def authorized(self, request: web.Request) -> bool:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        with self._changed:
            if token in self.issued:
                self.issued[token] += 1
                return self.token_uses is None or self.issued[token] <= self.token_uses
        return bool(self.credential) and token == self.credential

    def unauthorized(self) -> web.Response:
        return _errors(401, "INVALID_SESSION_ID", "Session expired or invalid")

    def rate_limited(self, reset_s: float) -> web.Response:
        # Salesforce sends no Retry-After: the allowance is a rolling 24 hours.
        return _errors(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")

    def contacts(self, field_name: str = "Email") -> dict[str, Any]:
        """External ID → the field's value, for every Contact held."""
        with self._changed:
            held = list(self.records["Contact"].values())
        return {str(r.get("External_Id__c")): r.get(field_name) for r in held}

    # -- shared by every API route ----------------------------------------------------------

    async def _api(self, request: web.Request, answer: Any) -> web.StreamResponse:
        if (fault := self.guard(request)) is not None:
            return fault
        if not VERSION.fullmatch(request.match_info["version"]):
            return _errors(404, "NOT_FOUND", "The requested resource does not exist")
        with self._changed:
            self.api_used += 1
            over = self.api_used > self.api_max
            usage = f"api-usage={self.api_used}/{self.api_max}"
        if over:
            return _errors(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
        try:
            response: web.StreamResponse = await answer(request)
        except Refused as refused:
            response = _errors(refused.status, refused.code, refused.message)
        response.headers["Sforce-Limit-Info"] = usage
        self.changed()
        return response

    def _columns(self, name: str) -> dict[str, Column]:
        if name not in self.objects:
            raise Refused(404, "NOT_FOUND", "The requested resource does not exist")
        return self.objects[name]

    # -- sObject Collections ----------------------------------------------------------------

    async def _upsert(self, request: web.Request) -> web.StreamResponse:
        return await self._api(request, self._upsert_collection)

    async def _upsert_collection(self, request: web.Request) -> web.Response:
        name, key_field = request.match_info["object"], request.match_info["field"]
        columns = self._columns(name)
        if key_field not in columns or not columns[key_field].external_id:
            raise Refused(400, "INVALID_FIELD", f"Field {key_field} is not an external ID")
        payload = await request.json()
        records = payload.get("records")
        if not isinstance(records, list):
            raise Refused(400, "JSON_PARSER_ERROR", "records is required")
        if len(records) > MAX_RECORDS:
            raise Refused(400, "EXCEEDED_ID_LIMIT", f"more than {MAX_RECORDS} records")
        if self.refuses_whole(payload):
            raise Refused(400, "JSON_PARSER_ERROR", "Cannot deserialize instance of date")
        typed = [self._from_json(name, columns, record) for record in records]
        results = []
        with self._changed:
            for values in typed:
                results.append(self._result(lambda v=values: self._write(name, key_field, v)))
        return _json(results)

    def _from_json(self, name: str, columns: dict[str, Column], record: Any) -> dict[str, Any]:
        if not isinstance(record, dict) or (record.get("attributes") or {}).get("type") != name:
            raise Refused(400, "INVALID_TYPE", "Must send a concrete entity type.")
        values = {}
        for field_name, value in record.items():
            if field_name == "attributes":
                continue
            if isinstance(value, dict) and field_name in self.relations.get(name, {}):
                parent_fields = [k for k in value if k != "attributes"]
                if len(parent_fields) != 1:
                    raise Refused(400, "INVALID_FIELD", f"{field_name}: one external ID field")
                values[f"{field_name}.{parent_fields[0]}"] = value[parent_fields[0]]
                continue
            if field_name not in columns:
                raise Refused(
                    400, "INVALID_FIELD", f"No such column '{field_name}' on sobject of type {name}"
                )
            if isinstance(value, dict | list):
                kind = columns[field_name].kind
                raise Refused(
                    400,
                    "JSON_PARSER_ERROR",
                    f"Cannot deserialize instance of {kind} from START_OBJECT value",
                )
            values[field_name] = _typed(columns[field_name], value, refuse=True)
        return values

    def _result(self, write: Any) -> dict[str, Any]:
        try:
            record_id, created = write()
        except RecordError as error:
            item = {"statusCode": error.code, "message": error.message, "fields": error.fields}
            return {"success": False, "errors": [item]}
        return {"id": record_id, "success": True, "created": created, "errors": []}

    def _write(self, name: str, key_field: str, values: dict[str, Any]) -> tuple[str, bool]:
        """Upsert one record (the lock is held); raises RecordError as Salesforce refuses."""
        columns, held = self.objects[name], self.records[name]
        if self.is_rejected(values):
            raise RecordError("FIELD_CUSTOM_VALIDATION_EXCEPTION", "email: invalid", ["Email"])
        for value in values.values():
            if str(value) in self.record_errors:
                code, message = self.record_errors[str(value)]
                raise RecordError(code, message)
        values = self._resolve_parents(name, values)
        key = values.get(key_field)
        if key in (None, ""):
            raise RecordError("MISSING_ARGUMENT", f"{key_field} not specified")
        found = sorted(self._holders(name, key_field, key))
        current = held[found[0]] if found else {}
        merged = {**current, **values}
        for field_name, column in columns.items():
            value = merged.get(field_name)
            _check(field_name, column, value)
            if column.unique and value not in (None, ""):
                others = sorted(self._holders(name, field_name, value))
                if [i for i in others if not found or i != found[0]]:
                    raise RecordError(
                        "DUPLICATE_VALUE",
                        f"duplicate value found: {field_name} duplicates value on record with id:"
                        f" {others[0]}",
                        [field_name],
                    )
        record_id = found[0] if found else f"003{next(self._ids):012d}AAA"
        self._forget(name, record_id)
        held[record_id] = {**merged, "Id": record_id}
        self._remember(name, record_id)
        return record_id, not found

    def seed(self, name: str, record: dict[str, Any]) -> None:
        """A record someone else made (its `Id` given), as the org holds it."""
        with self._changed:
            self.records[name][record["Id"]] = dict(record)
            self._remember(name, record["Id"])

    def remove(self, name: str, record_id: str) -> None:
        """A record someone else deleted."""
        with self._changed:
            self._forget(name, record_id)
            del self.records[name][record_id]

    def _holders(self, name: str, field_name: str, value: Any) -> set[str]:
        """The records of `name` whose `field_name` is `value`, through an index (a scan of
        every record per input made 100,000 upserts quadratic)."""
        return set(self._index.get((name, field_name), {}).get(_indexed(value), ()))

    def _remember(self, name: str, record_id: str) -> None:
        for field_name, value in self.records[name][record_id].items():
            by_value = self._index.setdefault((name, field_name), {})
            by_value.setdefault(_indexed(value), set()).add(record_id)

    def _forget(self, name: str, record_id: str) -> None:
        for field_name, value in self.records[name].get(record_id, {}).items():
            self._index.get((name, field_name), {}).get(_indexed(value), set()).discard(record_id)

    def _resolve_parents(self, name: str, values: dict[str, Any]) -> dict[str, Any]:
        """`Account.External_Id__c: X` → `AccountId` of the Account holding X."""
        resolved = {}
        for field_name, value in values.items():
            relation, dot, parent_field = field_name.partition(".")
            if not dot:
                resolved[field_name] = value
                continue
            parent, lookup = self.relations[name][relation]
            found = sorted(self._holders(parent, parent_field, value))
            if value is not None and not found:
                raise RecordError(
                    "INVALID_FIELD",
                    f"Foreign key external ID: {value} not found for field {parent_field} in"
                    f" entity {parent}",
                )
            resolved[lookup] = found[0] if found else None
        return resolved

    def _known(self, name: str, column: str) -> bool:
        relation, dot, parent_field = column.partition(".")
        if not dot:
            return column in self.objects[name]
        parent = self.relations.get(name, {}).get(relation)
        return parent is not None and self.objects[parent[0]].get(parent_field) is not None

    async def _delete(self, request: web.Request) -> web.StreamResponse:
        return await self._api(request, self._delete_collection)

    async def _delete_collection(self, request: web.Request) -> web.Response:
        ids = [i for i in request.query.get("ids", "").split(",") if i]
        if not ids:
            raise Refused(400, "MISSING_ARGUMENT", "ids parameter is required")
        if len(ids) > MAX_RECORDS:
            raise Refused(400, "EXCEEDED_ID_LIMIT", f"more than {MAX_RECORDS} ids")
        results = []
        with self._changed:
            for record_id in ids:
                holder = next((h for h in self.records.values() if record_id in h), None)
                for name, records in self.records.items():
                    if records is holder:
                        self._forget(name, record_id)
                if holder is None:
                    error = {"statusCode": "ENTITY_IS_DELETED", "message": "entity is deleted"}
                    results.append({"id": record_id, "success": False, "errors": [error]})
                    continue
                del holder[record_id]
                results.append({"id": record_id, "success": True, "errors": []})
        return _json(results)

    # -- SOQL ------------------------------------------------------------------------------

    async def _query(self, request: web.Request) -> web.StreamResponse:
        return await self._api(request, self._run_query)

    async def _run_query(self, request: web.Request) -> web.Response:
        soql = request.query.get("q", "")
        match = re.fullmatch(
            r"SELECT Id, (\w+) FROM (\w+) WHERE (\w+) IN \((.*)\)", soql.strip(), re.S
        )
        if match is None or match[1] != match[3]:
            raise Refused(400, "MALFORMED_QUERY", f"unexpected query: {soql[:80]}")
        field_name, name = match[1], match[2]
        if field_name not in self._columns(name):
            raise Refused(400, "INVALID_FIELD", f"No such column '{field_name}' on entity {name}")
        wanted = set(_soql_strings(match[4]))
        with self._changed:
            rows = [
                {"attributes": {"type": name}, "Id": i, field_name: r.get(field_name)}
                for i, r in self.records[name].items()
                if r.get(field_name) in wanted
            ]
        return _json({"totalSize": len(rows), "done": True, "records": rows})

    # -- Bulk API 2.0 ----------------------------------------------------------------------

    async def _create_job(self, request: web.Request) -> web.StreamResponse:
        return await self._api(request, self._new_job)

    async def _new_job(self, request: web.Request) -> web.Response:
        body = await request.json()
        name, operation = body.get("object"), body.get("operation")
        if name not in self.objects:
            raise Refused(400, "INVALIDJOB", f"InvalidJob : sObject type '{name}' is not supported")
        if operation not in ("insert", "update", "upsert", "delete"):
            raise Refused(400, "INVALIDJOB", f"InvalidJob : operation {operation!r}")
        if body.get("contentType", "CSV") != "CSV" or body.get("lineEnding", "LF") != "LF":
            raise Refused(400, "INVALIDJOB", "InvalidJob : only CSV with LF line endings")
        key_field = body.get("externalIdFieldName")
        column = self.objects[name].get(key_field or "")
        if operation == "upsert" and (column is None or not column.external_id):
            raise Refused(
                400,
                "INVALIDJOB",
                f"InvalidJob : Field name provided, {key_field} is not an External Id or indexed"
                f" field for {name}",
            )
        job = Job(f"750{uuid.uuid4().hex[:12]}AAA", name, operation, key_field)
        with self._changed:
            self.jobs[job.id] = job
        return _json(self._info(job))

    async def _upload(self, request: web.Request) -> web.StreamResponse:
        return await self._api(request, self._take_upload)

    async def _take_upload(self, request: web.Request) -> web.Response:
        job = self._job(request)
        body = await request.read()
        if job.state != "Open":
            raise Refused(409, "INVALIDJOBSTATE", f"InvalidJobState : job is {job.state}")
        if not request.content_type.startswith("text/csv"):
            raise Refused(400, "INVALIDJOB", "InvalidJob : Content-Type must be text/csv")
        if len(body) > MAX_UPLOAD_BYTES:
            raise Refused(413, "REQUEST_ENTITY_TOO_LARGE", "upload larger than 150 MB")
        job.uploads.append(body.decode())
        return web.Response(status=201)

    async def _job_state(self, request: web.Request) -> web.StreamResponse:
        return await self._api(request, self._set_state)

    async def _set_state(self, request: web.Request) -> web.Response:
        job, state = self._job(request), (await request.json()).get("state")
        abortable = ("Open", "UploadComplete", "InProgress")
        if not (state == "UploadComplete" and job.state == "Open") and not (
            state == "Aborted" and job.state in abortable
        ):
            raise Refused(409, "INVALIDJOBSTATE", f"InvalidJobState : {job.state} to {state}")
        job.state = state
        return _json(self._info(job))

    async def _job_info(self, request: web.Request) -> web.StreamResponse:
        return await self._api(request, self._poll)

    async def _poll(self, request: web.Request) -> web.Response:
        job = self._job(request)
        if job.state in ("UploadComplete", "InProgress"):
            job.polls += 1
            job.state = "InProgress"
            if job.polls >= self.polls_to_complete:
                self._process(job)
        return _json(self._info(job))

    def _process(self, job: Job) -> None:
        rows = [row for text in job.uploads for row in csv.reader(io.StringIO(text))]
        header, rows = (rows[0], rows[1:]) if rows else ([], [])
        job.columns = header
        columns = self.objects[job.object]
        unknown = [c for c in header if not self._known(job.object, c)]
        if unknown or (job.external_id and job.external_id not in header):
            job.state = "Failed"
            job.error_message = f"InvalidBatch : Field name not found : {(unknown or ['?'])[0]}"
            job.unprocessed = rows
            return
        failure = self.job_failures.popleft() if self.job_failures else None
        processed = rows[: len(rows) // 2] if failure else rows
        with self._changed:
            for row in processed:
                self._process_row(job, columns, header, row)
        job.unprocessed = rows[len(processed) :]
        job.state = "Failed" if failure else "JobComplete"
        job.error_message = failure

    def _process_row(
        self, job: Job, columns: dict[str, Column], header: list[str], row: list[str]
    ) -> None:
        try:
            if len(row) != len(header):
                raise RecordError("INVALID_FIELD", "row has a different number of columns")
            values = {
                name: _typed(
                    columns.get(name, TEXT), None if text == "#N/A" else text, refuse=False
                )
                for name, text in zip(header, row, strict=True)
                if text != ""
            }
            record_id, created = self._write(job.object, job.external_id or "Id", values)
        except RecordError as error:
            fields = ":".join(error.fields)
            job.failed.append(("", f"{error.code}:{error.message}:{fields} --", row))
            return
        job.succeeded.append((record_id, created, row))

    async def _results(self, request: web.Request) -> web.StreamResponse:
        return await self._api(request, self._result_csv)

    async def _result_csv(self, request: web.Request) -> web.Response:
        job = self._job(request)
        if job.state not in ("JobComplete", "Failed", "Aborted"):
            raise Refused(409, "INVALIDJOBSTATE", "InvalidJobState : results not ready")
        out = io.StringIO()
        writer = csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n")
        if request.path.rstrip("/").endswith("failedResults"):
            writer.writerow(["sf__Id", "sf__Error", *job.columns])
            writer.writerows([record_id, error, *row] for record_id, error, row in job.failed)
        else:
            writer.writerow(["sf__Id", "sf__Created", *job.columns])
            writer.writerows(
                [record_id, str(created).lower(), *row] for record_id, created, row in job.succeeded
            )
        rows = out.getvalue()
        # With no row to report, Salesforce answers an empty body rather than a header.
        return web.Response(text=rows if rows.count("\n") > 1 else "", content_type="text/csv")

    def _job(self, request: web.Request) -> Job:
        job = self.jobs.get(request.match_info["job"])
        if job is None:
            raise Refused(404, "NOT_FOUND", "The requested resource does not exist")
        return job

    def _info(self, job: Job) -> dict[str, Any]:
        info = {
            "id": job.id,
            "operation": job.operation,
            "object": job.object,
            "externalIdFieldName": job.external_id,
            "state": job.state,
            "contentType": "CSV",
            "lineEnding": "LF",
            "numberRecordsProcessed": len(job.failed) + len(job.succeeded),
            "numberRecordsFailed": len(job.failed),
        }
        if job.error_message:
            info["errorMessage"] = job.error_message
        return info

    # -- limits, describe, OAuth ------------------------------------------------------------

    async def _limits(self, request: web.Request) -> web.StreamResponse:
        async def answer(_: web.Request) -> web.Response:
            remaining = self.api_max - self.api_used
            return _json({"DailyApiRequests": {"Max": self.api_max, "Remaining": remaining}})

        return await self._api(request, answer)

    async def _describe(self, request: web.Request) -> web.StreamResponse:
        async def answer(request: web.Request) -> web.Response:
            name = request.match_info["object"]
            fields = [
                {
                    "name": n,
                    "type": c.kind,
                    "length": c.length,
                    "externalId": c.external_id,
                    "idLookup": c.external_id or n == "Id",
                    "unique": c.unique,
                    "nillable": not c.required,
                }
                for n, c in self._columns(name).items()
            ]
            return _json({"name": name, "fields": fields})

        return await self._api(request, answer)

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        grant, client = form.get("grant_type"), str(form.get("client_id", ""))
        if client not in self.clients:
            return _oauth_error("invalid_client_id", "client identifier invalid")
        if grant == "client_credentials":
            ok = form.get("client_secret") == self.clients[client]
        elif grant == "refresh_token":
            ok = self.refresh_tokens.get(str(form.get("refresh_token"))) == client
        else:
            return _oauth_error("unsupported_grant_type", "grant type not supported")
        if not ok:
            return _oauth_error("invalid_grant", "authentication failure")
        token = f"00D!{uuid.uuid4().hex}"
        with self._changed:
            self.issued[token] = 0
        return _json({"access_token": token, "instance_url": self.origin, "token_type": "Bearer"})


def _typed(column: Column, value: Any, *, refuse: bool) -> Any:
    """A value as the field holds it; a wrong type refuses the whole request (JSON) or the
    record (CSV), as Salesforce does."""
    if value is None:
        return None
    try:
        if column.kind == "double":
            return float(value) if not isinstance(value, bool) else _wrong()
        if column.kind == "boolean":
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "false") and not refuse:
                return str(value).lower() == "true"
            return _wrong()
        if column.kind == "date":
            date.fromisoformat(str(value))
        return str(value).lower() if isinstance(value, bool) else str(value)
    except ValueError:
        if refuse:
            raise Refused(
                400, "JSON_PARSER_ERROR", f"Cannot deserialize instance of {column.kind}"
            ) from None
        raise RecordError(
            "INVALID_TYPE_ON_FIELD_IN_RECORD", f"value not of required type: {value}"
        ) from None


def _csv_value(text: str) -> str | None:
    return None if text == "#N/A" else text


def _wrong() -> Any:
    raise ValueError("wrong type")


def _check(name: str, column: Column, value: Any) -> None:
    if value in (None, "") and column.required:
        raise RecordError(
            "REQUIRED_FIELD_MISSING", f"Required fields are missing: [{name}]", [name]
        )
    if isinstance(value, str) and len(value) > column.length:
        raise RecordError(
            "STRING_TOO_LONG",
            f"{name}: data value too large: {value[:20]}… (max length={column.length})",
            [name],
        )
    if column.kind == "email" and value and not re.fullmatch(r"[^@\s]+@[^@\s]+\.\w+", value):
        raise RecordError(
            "INVALID_EMAIL_ADDRESS", f"{name}: invalid email address: {value}", [name]
        )


def _soql_strings(text: str) -> list[str]:
    """The string literals of a SOQL IN list ('a', 'b\\'c')."""
    return [re.sub(r"\\(.)", r"\1", m) for m in re.findall(r"'((?:[^'\\]|\\.)*)'", text)]


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


def _errors(status: int, code: str, message: str) -> web.Response:
    return web.json_response([{"message": message, "errorCode": code}], status=status)


def _oauth_error(error: str, description: str) -> web.Response:
    return web.json_response({"error": error, "error_description": description}, status=400)


class _RecordPaths(frozenset[str]):
    """The collections routes, and every job's CSV upload (its path holds the job's id)."""

    def __contains__(self, path: object) -> bool:
        return super().__contains__(path) or bool(
            isinstance(path, str) and BULK_UPLOAD.fullmatch(path)
        )


def records_in(seen: Seen) -> int:
    if BULK_UPLOAD.fullmatch(seen.path):
        return len(list(csv.reader(io.StringIO(seen.body.decode())))) - 1
    if seen.method == "DELETE":
        return len(seen.query.get("ids", "").split(","))
    return len(seen.json()["records"])


API = "/services/data/v62.0"

CASE = DestinationCase(
    type="salesforce",
    emulator=SalesforceEmulator,
    settings=lambda url: {
        "instance_url": url,
        "access_token": "${CONFORMANCE_CREDENTIAL}",
        "object": "Contact",
        "external_id_field": "External_Id__c",
        "bulk_poll_s": 0.01,
        "request_limit_wait_s": 1.0,
    },
    action="upsert",
    fields={
        "Email": "email",
        "LastName": {"value": "Tester"},
        "Description": "name",
        "Title": "plan",
    },
    held=lambda emulator: emulator.contacts(),
    records_in=records_in,
    record_paths=_RecordPaths(
        {f"{API}/composite/sobjects/Contact/External_Id__c", f"{API}/composite/sobjects"}
    ),
    max_batch_size=10_000,
    max_request_bytes=100_000_000,
    max_record_bytes=400_000,
    declares_fields=False,
)


def _indexed(value: Any) -> Any:
    """A field's value as an index key: JSON-like values that are not hashable, as text."""
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value
