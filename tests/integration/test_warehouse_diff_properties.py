"""Properties: `diff: warehouse` finds exactly the changes `diff: local` finds.

For random models on real PostgreSQL and MariaDB servers (composite keys of text, integer,
date and decimal parts; text keys that differ only by case or trailing spaces; NULL and ''
in the mapped columns; decimals, timestamps with and without a zone, JSON) and random
mutations between two syncs, two mappings on the same model, one `diff: local` and one
`diff: warehouse`, send the same counts and the same keys per operation, the same data, and
keep snapshots of the same size. Both also agree with a model of the promise: NULL is not
'', 1.0 == 1.00, the session time zone a value was written in does not matter, keys compare
byte for byte, and only mapped columns count.

One database per test function; the table is dropped and created again for each example,
and each example has mappings (and snapshots) of its own.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, note, settings
from hypothesis import strategies as st

from ebbtide.config.workspace import load_workspace
from ebbtide.demo.receiver import Receiver
from ebbtide.services.sync import SyncService
from ebbtide.snapshots.warehouse_sql import snapshot_table_name
from ebbtide.values import RunRecord, RunStatus
from tests.integration.warehouse_kit import Backend, mysql_backend, postgres_backend
from tests.integration.workspace_kit import TOKEN, hook

TABLE = "prop_rows"
KEY_COLUMNS = ("k_txt", "k_int", "k_day", "k_dec")
VALUE_COLUMNS = ("v_txt", "v_dec", "v_ts", "v_tstz", "v_json")
COLUMNS = KEY_COLUMNS + VALUE_COLUMNS
# Primary keys a model may declare (in this order).
KEY_CHOICES: tuple[tuple[str, ...], ...] = (
    ("k_txt",),
    ("k_txt", "k_int"),
    ("k_int", "k_txt", "k_day"),
    ("k_dec", "k_txt"),
    ("k_day", "k_dec", "k_int"),
)

DDL = {
    "postgres": (
        f"CREATE TABLE {TABLE} (k_txt text NOT NULL, k_int integer NOT NULL,"
        " k_day date NOT NULL, k_dec numeric(10, 2) NOT NULL, v_txt text,"
        " v_dec numeric(12, 3), v_ts timestamp(6), v_tstz timestamptz(6), v_json jsonb)"
    ),
    # Text in a byte-wise (NO PAD) collation, so that 'a', 'A' and 'a ' are different keys.
    "mysql": (
        f"CREATE TABLE {TABLE} (k_txt VARCHAR(40) CHARACTER SET utf8mb4 COLLATE"
        " utf8mb4_nopad_bin NOT NULL, k_int INT NOT NULL, k_day DATE NOT NULL,"
        " k_dec DECIMAL(10, 2) NOT NULL, v_txt VARCHAR(100) CHARACTER SET utf8mb4 COLLATE"
        " utf8mb4_nopad_bin NULL, v_dec DECIMAL(12, 3) NULL, v_ts DATETIME(6) NULL,"
        " v_tstz TIMESTAMP(6) NULL DEFAULT NULL, v_json JSON NULL) CHARACTER SET utf8mb4"
    ),
}

# -- values ------------------------------------------------------------------------------

KEY_TEXTS = ["a", "A", "a ", "a  ", " a", "b", "B", "ß", "ss", "é", "e\u0301", ""]
NO_TRAILING_SPACE_KEY_TEXTS = [t for t in KEY_TEXTS if t == t.rstrip(" ")]
VALUE_TEXTS = ["", " ", "x", "X", "x ", "NULL", "null", "it's", "back\\slash", "é", "line\nbreak"]
ZONES = ["+00:00", "+05:30", "-08:00"]
DAYS = [date(2024, 1, 1), date(2024, 1, 2), date(1999, 12, 31)]
KEY_DECIMALS = [Decimal(v) for v in ("0.00", "1.00", "1.50", "-2.25", "10.10")]


@dataclass(frozen=True)
class JsonText:
    """A JSON document: its value, and the text it is written as."""

    value: Any
    text: str


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-1000, 1000) | st.sampled_from(["", "x", "é", "a b"]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["a", "b", "B", "long_key"]), inner, max_size=3)
    ),
    max_leaves=6,
)


@st.composite
def json_texts(draw: st.DrawFn, value: Any = None, *, any_value: bool = True) -> JsonText:
    """A JSON document written in one of several equivalent forms."""
    if any_value:
        value = draw(json_values)
    separators = draw(st.sampled_from([(",", ":"), (", ", ": "), (" , ", " : ")]))
    text = json.dumps(
        value,
        separators=separators,
        sort_keys=draw(st.booleans()),
        ensure_ascii=draw(st.booleans()),
    )
    if isinstance(value, dict) and draw(st.booleans()):
        text = json.dumps(dict(reversed(list(value.items()))), separators=separators)
    return JsonText(value, text)


def decimals(places: int, digits: int) -> st.SearchStrategy[Decimal]:
    limit = 10 ** (digits - places) - 1
    return st.integers(-limit, limit).map(lambda n: Decimal(n).scaleb(-places)) | st.sampled_from(
        [Decimal("1.0"), Decimal("1.5"), Decimal("0")]
    )


# Naive bounds: hypothesis draws wall-clock times; the instants are those read as UTC.
naive_times = st.datetimes(datetime(1990, 1, 1), datetime(2036, 12, 31))  # noqa: DTZ001
instants = naive_times.map(lambda t: t.replace(tzinfo=UTC))

VALUE_STRATEGIES: dict[str, st.SearchStrategy[Any]] = {
    "v_txt": st.none() | st.sampled_from(VALUE_TEXTS),
    "v_dec": st.none() | decimals(3, 12),
    "v_ts": st.none() | naive_times,
    "v_tstz": st.none() | instants,
    "v_json": st.none() | json_texts(),
}


def key_strategies(texts: list[str]) -> dict[str, st.SearchStrategy[Any]]:
    return {
        "k_txt": st.sampled_from(texts),
        "k_int": st.integers(-2, 2),
        "k_day": st.sampled_from(DAYS),
        "k_dec": st.sampled_from(KEY_DECIMALS),
    }


# -- the model of the promise ------------------------------------------------------------


def same_value(column: str, a: Any, b: Any) -> bool:
    """Whether a destination holding `a` is up to date with `b` (the promise)."""
    if a is None or b is None:
        return a is None and b is None  # NULL is distinguishable from everything
    if column == "v_json":
        return bool(_json_eq(a.value, b.value))
    return bool(a == b)  # Decimal 1.0 == 1.00; aware datetimes compare as instants


def _json_eq(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_json_eq(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_json_eq(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


Row = dict[str, Any]


@dataclass(frozen=True)
class Mutation:
    """One statement between the syncs."""

    kind: str  # insert, delete, update, touch, rewrite, alter (the column's type)
    key: tuple[Any, ...]
    row: Row | None = None  # insert: the row
    column: str = ""  # update, touch, rewrite
    value: Any = None  # update: the new value; rewrite: the same value in another form
    zone: str = "+00:00"  # the writer's session time zone


@dataclass
class Scenario:
    key: tuple[str, ...]
    mapped: tuple[str, ...]
    rows: list[Row]
    mutations: list[Mutation]
    zone: str

    def key_of(self, row: Row) -> tuple[Any, ...]:
        return tuple(row[c] for c in self.key)

    def after(self) -> dict[tuple[Any, ...], Row]:
        rows = {self.key_of(r): r for r in self.rows}
        for m in self.mutations:
            if m.kind == "insert":
                assert m.row is not None
                rows[m.key] = m.row
            elif m.kind == "delete":
                del rows[m.key]
            elif m.kind == "update":
                rows[m.key] = {**rows[m.key], m.column: m.value}
        return rows

    def expected(self) -> dict[str, set[tuple[Any, ...]]]:
        before = {self.key_of(r): r for r in self.rows}
        after = self.after()
        return {
            "added": set(after) - set(before),
            "deleted": set(before) - set(after),
            "updated": {
                k
                for k in set(after) & set(before)
                if not all(same_value(c, before[k][c], after[k][c]) for c in self.mapped)
            },
        }

    def __repr__(self) -> str:  # what hypothesis prints for a falsifying example
        lines = [f"Scenario(key={self.key}, mapped={self.mapped}, zone={self.zone!r})"]
        lines += [f"  row {r!r}" for r in self.rows]
        lines += [f"  {m!r}" for m in self.mutations]
        return "\n".join(lines)


@st.composite
def scenarios(
    draw: st.DrawFn, *, key_texts: list[str], rewrite_json: bool, map_json: bool = True
) -> Scenario:
    key = draw(st.sampled_from(KEY_CHOICES))
    others = [c for c in COLUMNS if c not in key and (map_json or c != "v_json")]
    mapped = tuple(c for c in others if draw(st.booleans())) or (others[-1],)
    keys = key_strategies(key_texts)
    row_strategy = st.fixed_dictionaries({**keys, **VALUE_STRATEGIES})

    def key_of(row: Row) -> tuple[Any, ...]:
        return tuple(row[c] for c in key)

    rows = draw(st.lists(row_strategy, max_size=10, unique_by=key_of))
    current = {key_of(r): r for r in rows}
    mutations: list[Mutation] = []
    kinds = ["insert", "delete", "update", "update", "touch", "rewrite"]
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(kinds))
        zone = draw(st.sampled_from(ZONES))
        if kind == "insert" or not current:
            row = draw(row_strategy.filter(lambda r: key_of(r) not in current))
            current[key_of(row)] = row
            mutations.append(Mutation("insert", key_of(row), row=row, zone=zone))
            continue
        target = draw(st.sampled_from(sorted(current, key=repr)))
        column = draw(st.sampled_from(VALUE_COLUMNS))
        old = current[target][column]
        if kind == "delete":
            del current[target]
            mutations.append(Mutation("delete", target, zone=zone))
        elif kind == "update":
            value = draw(VALUE_STRATEGIES[column])
            current[target] = {**current[target], column: value}
            mutations.append(Mutation("update", target, column=column, value=value, zone=zone))
        elif kind == "touch":
            mutations.append(Mutation("touch", target, column=column, zone=zone))
        else:  # the same value, written in another form
            if old is None or (column == "v_json" and not rewrite_json):
                mutations.append(Mutation("touch", target, column=column, zone=zone))
                continue
            value = draw(json_texts(old.value, any_value=False)) if column == "v_json" else old
            mutations.append(Mutation("rewrite", target, column=column, value=value, zone=zone))
    return Scenario(key, mapped, rows, mutations, draw(st.sampled_from(ZONES)))


# -- SQL -----------------------------------------------------------------------------------


def literal(dialect: str, column: str, value: Any, *, rescaled: bool = False) -> str:
    """`value` as an SQL literal for `column`, written in the writer's session time zone
    (the statements run after `SET TIME ZONE`); `rescaled` writes a decimal with more zeros."""
    if value is None:
        return "NULL"
    if column in ("k_txt", "v_txt"):
        return text_literal(dialect, value)
    if column == "v_json":
        return text_literal(dialect, value.text)
    if column == "k_int":
        return str(value)
    if column == "k_day":
        return f"DATE '{value.isoformat()}'"
    if column in ("k_dec", "v_dec"):
        text = format(value, "f")
        if rescaled:
            text = text + ("0" if "." in text else ".0")
        return text
    if column == "v_ts":
        return f"'{value.isoformat(sep=' ')}'"
    raise AssertionError(column)


def tstz_literal(value: datetime, zone: str) -> str:
    """An instant as the wall-clock text of the session time zone `zone` (no offset)."""
    sign = 1 if zone[0] == "+" else -1
    hours, minutes = int(zone[1:3]), int(zone[4:6])
    offset = timezone(sign * timedelta(hours=hours, minutes=minutes))
    return "'" + value.astimezone(offset).replace(tzinfo=None).isoformat(sep=" ") + "'"


def text_literal(dialect: str, text: str) -> str:
    escaped = text.replace("'", "''")
    if dialect == "mysql":
        escaped = text.replace("\\", "\\\\").replace("'", "''")
    return f"'{escaped}'"


def set_zone(dialect: str, zone: str) -> str:
    if dialect == "postgres":  # an interval: ISO's sign (a bare '+05:30' is POSIX's, reversed)
        return f"SET TIME ZONE INTERVAL '{zone}' HOUR TO MINUTE"
    return f"SET time_zone = '{zone}'"


def value_sql(dialect: str, column: str, value: Any, zone: str, *, rescaled: bool = False) -> str:
    if column == "v_tstz" and value is not None:
        return tstz_literal(value, zone)
    return literal(dialect, column, value, rescaled=rescaled)


def insert_sql(dialect: str, row: Row, zone: str) -> str:
    values = ", ".join(value_sql(dialect, c, row[c], zone) for c in COLUMNS)
    return f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) VALUES ({values})"


def where_sql(dialect: str, scenario: Scenario, key: tuple[Any, ...]) -> str:
    return " AND ".join(
        f"{c} = {literal(dialect, c, v)}" for c, v in zip(scenario.key, key, strict=True)
    )


def mutation_sql(dialect: str, scenario: Scenario, m: Mutation) -> list[str]:
    statements = [set_zone(dialect, m.zone)]
    if m.kind == "insert":
        assert m.row is not None
        return [*statements, insert_sql(dialect, m.row, m.zone)]
    if m.kind == "alter":  # m.value: the column's new type
        if dialect == "postgres":
            return [f"ALTER TABLE {TABLE} ALTER COLUMN {m.column} TYPE {m.value}"]
        return [f"ALTER TABLE {TABLE} MODIFY {m.column} {m.value} NULL"]
    where = where_sql(dialect, scenario, m.key)
    if m.kind == "delete":
        return [*statements, f"DELETE FROM {TABLE} WHERE {where}"]
    if m.kind == "touch":
        return [*statements, f"UPDATE {TABLE} SET {m.column} = {m.column} WHERE {where}"]
    rescaled = m.kind == "rewrite"
    value = value_sql(dialect, m.column, m.value, m.zone, rescaled=rescaled)
    return [*statements, f"UPDATE {TABLE} SET {m.column} = {value} WHERE {where}"]


# -- the two syncs -------------------------------------------------------------------------


@dataclass
class Outcome:
    run: RunRecord
    sent: dict[str, set[str]]  # op → canonical JSON keys
    data: dict[str, Any]  # canonical key → data sent
    snapshot: int

    @property
    def counts(self) -> tuple[int, int, int]:
        return (self.run.added, self.run.updated, self.run.deleted)


def canonical(key: Any) -> str:
    return json.dumps(key, sort_keys=True)


def key_json(scenario: Scenario, key: tuple[Any, ...]) -> str:
    """A key of the model as the destination receives it (canonical text)."""

    def part(value: Any) -> Any:
        if isinstance(value, date):
            return value.isoformat()
        if isinstance(value, Decimal):
            return float(value)
        return value

    if len(scenario.key) == 1:
        return canonical(part(key[0]))
    return canonical({c: part(v) for c, v in zip(scenario.key, key, strict=True)})


def differences(local: dict[str, Any], warehouse: dict[str, Any]) -> str:
    """The records whose data differ, in full: local, then warehouse."""
    keys = sorted(set(local) | set(warehouse))
    return "\n".join(
        f"{k}:\n  local     {local.get(k)!r}\n  warehouse {warehouse.get(k)!r}"
        for k in keys
        if local.get(k) != warehouse.get(k)
    )


@dataclass
class Harness:
    """One database, one workspace folder, one receiver for a whole test function."""

    backend: Backend
    root: Path
    receiver: Receiver
    examples: Iterator[int] = field(default_factory=itertools.count)
    ddl: str = ""  # the table, when not DDL[dialect]

    @property
    def dialect(self) -> str:
        return self.backend.name

    def prepare(self, scenario: Scenario) -> tuple[SyncService, str, str]:
        n = next(self.examples)
        model, local, warehouse = f"m{n}", f"m{n}_local", f"m{n}_warehouse"
        fields = {c: c for c in scenario.mapped}
        spec = {
            "model": model,
            "destination": "hook",
            "action": "upsert",
            "mode": "mirror",
            # A small model may lose every row between the syncs: no guard stops that here.
            "guards": {"max_delete_pct": 100, "max_change_pct": 1_000_000},
        }
        doc = {
            "sources": {"warehouse": self.backend.source},
            "models": {
                model: {
                    "source": "warehouse",
                    "primary_key": list(scenario.key),
                    "sql": f"select {', '.join(COLUMNS)} from {TABLE}",
                }
            },
            "destinations": {"hook": hook(batch_size=50)},
            "mappings": {
                local: {**spec, "fields": dict(fields), "diff": "local"},
                warehouse: {**spec, "fields": dict(fields), "diff": "warehouse"},
            },
        }
        # JSON is YAML, and never repeats a node with an alias (which ebbtide refuses)
        (self.root / "ebbtide.yml").write_text(json.dumps(doc, indent=1))
        self.backend.execute(f"DROP TABLE IF EXISTS {TABLE}", self.ddl or DDL[self.dialect])
        for row in scenario.rows:
            self.backend.execute(
                set_zone(self.dialect, scenario.zone), insert_sql(self.dialect, row, scenario.zone)
            )
        return SyncService(load_workspace(self.root)), local, warehouse

    def sync(self, service: SyncService, name: str) -> Outcome:
        self.receiver.reset()
        run = service.run(name)
        assert run.status is RunStatus.SUCCESS, (name, run.status, run.error)
        sent: dict[str, set[str]] = {"added": set(), "updated": set(), "deleted": set()}
        data: dict[str, Any] = {}
        for record in self.receiver.records:
            key = canonical(record["key"])
            sent[record["op"]].add(key)
            data[key] = record["data"]
        return Outcome(run, sent, data, self.snapshot_size(service, name))

    def snapshot_size(self, service: SyncService, name: str) -> int:
        if name.endswith("_warehouse"):
            q = '"' if self.dialect == "postgres" else "`"
            table = f"{q}{self.backend.state_schema}{q}.{q}{snapshot_table_name(name)}{q}"
            return int(self.backend.rows(f"SELECT count(*) FROM {table}")[0][0])
        store = service.open_store(service.compile(name), read_only=True)
        try:
            return store.snapshot_size()
        finally:
            store.close()

    def check(self, scenario: Scenario) -> None:
        service, local, warehouse = self.prepare(scenario)
        try:
            rows = len(scenario.rows)
            first = {name: self.sync(service, name) for name in (local, warehouse)}
            for outcome in first.values():
                assert outcome.counts == (rows, 0, 0)
                assert outcome.snapshot == rows
            assert first[local].sent == first[warehouse].sent
            assert first[local].data == first[warehouse].data, differences(
                first[local].data, first[warehouse].data
            )
            expected_first = {key_json(scenario, scenario.key_of(r)) for r in scenario.rows}
            assert first[local].sent["added"] == expected_first

            for m in scenario.mutations:
                self.backend.execute(*mutation_sql(self.dialect, scenario, m))
            second = {name: self.sync(service, name) for name in (local, warehouse)}
            was, wh = second[local], second[warehouse]
            # The warehouse diff finds what the local one finds ...
            assert wh.counts == was.counts, (wh.counts, was.counts)
            assert wh.sent == was.sent, f"local {was.sent}, warehouse {wh.sent}"
            assert wh.data == was.data, differences(was.data, wh.data)
            assert wh.snapshot == was.snapshot == len(scenario.after())
            # ... and both find what the promise says changed.
            expected = {
                op: {key_json(scenario, k) for k in keys}
                for op, keys in scenario.expected().items()
            }
            assert was.sent == expected, f"sent {was.sent}, expected {expected}"
            assert was.counts == tuple(len(expected[op]) for op in ("added", "updated", "deleted"))
        finally:
            service.state.dispose()


@pytest.fixture
def harness_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, receiver: Receiver
) -> Iterator[Any]:
    opened: list[Backend] = []
    monkeypatch.setenv("HOOK_URL", receiver.url)
    monkeypatch.setenv("HOOK_TOKEN", TOKEN)

    def make(dialect: str) -> Harness:
        backend = (postgres_backend if dialect == "postgres" else mysql_backend)("warehouse")
        opened.append(backend)
        return Harness(backend, tmp_path, receiver)

    yield make
    for backend in opened:
        backend.close()


PROPERTY = settings(
    max_examples=12,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target],
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
    ],
)


@pytest.mark.parametrize(
    ("dialect", "map_json"),
    # MariaDB's JSON column stays unmapped until the bug of
    # test_a_mariadb_json_column_is_sent_as_json_by_both_diffs is fixed: then map it too.
    [("postgres", True), ("mysql", True)],
    ids=["postgres", "mysql"],
)
def test_the_warehouse_diff_equals_the_local_diff(
    harness_for: Any, dialect: str, map_json: bool
) -> None:
    harness: Harness = harness_for(dialect)

    @PROPERTY
    @given(scenarios(key_texts=KEY_TEXTS, rewrite_json=dialect == "postgres", map_json=map_json))
    def prop(scenario: Scenario) -> None:
        note(repr(scenario))
        harness.check(scenario)

    prop()


# -- found by the properties: each a minimal example -------------------------------------


def row(text: str = "a", **values: Any) -> Row:
    made: Row = {"k_txt": text, "k_int": 0, "k_day": DAYS[0], "k_dec": Decimal("1.00")}
    return made | {c: None for c in VALUE_COLUMNS} | values


JSON_ROW = row(v_json=JsonText({"a": 1, "b": [2]}, '{"a": 1, "b": [2]}'))


def test_a_mariadb_json_column_is_sent_as_json_by_both_diffs(harness_for: Any) -> None:
    harness: Harness = harness_for("mysql")
    harness.check(Scenario(("k_txt",), ("v_json",), [JSON_ROW], [], "+00:00"))


@pytest.mark.xfail(
    strict=True,
    reason="known divergence, left for a hash-version migration (aligning it changes every"
    " stored local hash, a one-time resend): DuckDB's hash() of a decimal hashes its scaled"
    " integer,"
    " so DECIMAL(12,3) 1.500 and DECIMAL(14,4) 1.5000 differ: every row counts as updated"
    " (the warehouse diff, trim_scale / trimmed text, rightly finds no change)",
)
@pytest.mark.parametrize(
    ("dialect", "rescaled"),
    [("postgres", "numeric(14, 4)"), ("mysql", "DECIMAL(14, 4)")],
)
def test_a_decimal_column_rescaled_is_no_change_in_either_diff(
    harness_for: Any, dialect: str, rescaled: str
) -> None:
    """1.5 in a DECIMAL(12, 3) column, then the column made DECIMAL(14, 4): 1.500 == 1.5000."""
    harness: Harness = harness_for(dialect)
    rows = [row("a", v_dec=Decimal("1.5")), row("b", v_dec=None), row("c", v_dec=Decimal("-2"))]
    alter = Mutation("alter", (), column="v_dec", value=rescaled)
    harness.check(Scenario(("k_txt",), ("v_dec",), rows, [alter], "+00:00"))


@pytest.mark.xfail(
    strict=True,
    reason="known divergence, left for a hash-version migration: in the LOCAL diff a numeric"
    " without typmod travels as its text, so"
    " 1.5 -> 1.50 counts as updated (the warehouse diff's trim_scale rightly does not)",
)
def test_a_numeric_without_scale_rescaled_is_no_change_in_either_diff(harness_for: Any) -> None:
    """PostgreSQL's numeric without a declared scale keeps the scale written: 1.5 → 1.50."""
    harness: Harness = harness_for("postgres")
    harness.ddl = DDL["postgres"].replace("v_dec numeric(12, 3)", "v_dec numeric")
    rows = [row("a", v_dec=Decimal("1.5")), row("b", v_dec=Decimal("2"))]
    rewrites = [
        Mutation("rewrite", (k,), column="v_dec", value=v)
        for k, v in (("a", Decimal("1.5")), ("b", Decimal("2")))
    ]
    harness.check(Scenario(("k_txt",), ("v_dec",), rows, rewrites, "+00:00"))


@pytest.mark.xfail(
    strict=True,
    reason="local and warehouse diffs differ: the local diff hashes a `json` column as written,"
    " the warehouse diff as ::jsonb::text; the same document with other spaces or key order"
    " is an update locally only",
)
def test_a_postgres_json_column_rewritten_alike_is_no_change_in_either_diff(
    harness_for: Any,
) -> None:
    """A `json` (not jsonb) column keeps the text written: the same document, other spaces."""
    harness: Harness = harness_for("postgres")
    harness.ddl = DDL["postgres"].replace("v_json jsonb", "v_json json")
    same = JsonText(JSON_ROW["v_json"].value, '{"b":[2],"a":1}')
    rewrite = Mutation("rewrite", ("a",), column="v_json", value=same)
    harness.check(Scenario(("k_txt",), ("v_json",), [JSON_ROW], [rewrite], "+00:00"))
