"""The source conformance suite: every source type, against a fresh database of its kind, keeps
the same promises: exact types and values, NULLs as nulls, bounded streaming, clear errors when
the SQL or the connection fails, and a close that lets go of the database.

A source joins with a module under tests/conformance/source_cases/ defining `CASE` (a
`SourceCase`, see tests/conformance/source_case.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from ebbtide.errors import SourceError
from ebbtide.ports import AdapterContext, Source, iter_batches
from ebbtide.sources import BATCH_ROWS, SOURCES
from tests.conformance.source_case import Column, SourceCase, Warehouse, all_cases

ROWS = 2 * BATCH_ROWS + 1234  # three batches, the last one short
LOSE_ROWS = 5 * BATCH_ROWS  # enough that DuckDB has not read the whole file after one batch


CASES = all_cases()


@pytest.fixture(params=[pytest.param(c, marks=c.marks, id=c.type) for c in CASES])
def case(request: pytest.FixtureRequest) -> SourceCase:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def warehouse(
    case: SourceCase, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Warehouse]:
    with case.warehouse(tmp_path, request) as fresh:
        yield fresh


class Sources:
    """Sources built from the warehouse's settings as the engine builds them; closed after
    the test (before the PostgreSQL schema is dropped: an open cursor holds its locks)."""

    def __init__(self, case: SourceCase, warehouse: Warehouse, root: Path) -> None:
        self.case, self.warehouse, self.root = case, warehouse, root
        self.opened: list[Source] = []

    def connect(self) -> Source:
        plugin = SOURCES.get(self.case.type)
        config = plugin.config.model_validate(self.warehouse.settings)
        source: Source = plugin.connect(config, AdapterContext(self.root))
        self.opened.append(source)
        return source


@pytest.fixture
def sources(case: SourceCase, warehouse: Warehouse, tmp_path: Path) -> Iterator[Sources]:
    kit = Sources(case, warehouse, tmp_path)
    yield kit
    for source in kit.opened:
        source.close()


def typed_table(case: SourceCase) -> tuple[str, ...]:
    """The typed table: row 1 holds a value in every column, row 2 only its id."""
    columns = ", ".join(f"{c.name} {c.sql_type}" for c in case.columns)
    names = ", ".join(c.name for c in case.columns)
    values = ", ".join(c.literal for c in case.columns)
    return (
        f"CREATE TABLE typed (id {case.id_type} PRIMARY KEY, {columns})",
        f"INSERT INTO typed (id, {names}) VALUES (1, {values})",
        "INSERT INTO typed (id) VALUES (2)",
    )


def type_matches(column: Column, arrow: pa.DataType) -> bool:
    return column.arrow(arrow) if callable(column.arrow) else arrow == column.arrow


def says_where(case: SourceCase, error: SourceError) -> str:
    message = str(error)
    assert case.says in message, f"the error does not name the source ({case.says}): {message}"
    return message


# --- types and values ----------------------------------------------------------------------


def test_every_column_type_arrives_as_its_promised_arrow_type(
    case: SourceCase, warehouse: Warehouse, sources: Sources
) -> None:
    warehouse.execute(*typed_table(case))

    schema = sources.connect().read("SELECT * FROM typed ORDER BY id").schema

    assert schema.names == ["id", *(c.name for c in case.columns)]
    wrong = {
        c.name: str(schema.field(c.name).type)
        for c in case.columns
        if not type_matches(c, schema.field(c.name).type)
    }
    assert wrong == {}, f"columns of another Arrow type than promised: {wrong}"


def test_every_value_arrives_exactly(
    case: SourceCase, warehouse: Warehouse, sources: Sources
) -> None:
    warehouse.execute(*typed_table(case))

    row = sources.connect().read("SELECT * FROM typed ORDER BY id").read_all().to_pylist()[0]

    expected = {c.name: c.value for c in case.columns}
    got = {name: row[name] for name in expected}
    assert got == expected
    # Equal is not enough where Python compares loosely (True == 1, Decimal == float).
    assert {n: type(v) for n, v in got.items()} == {n: type(v) for n, v in expected.items()}


def test_nulls_arrive_as_nulls_in_every_column(
    case: SourceCase, warehouse: Warehouse, sources: Sources
) -> None:
    warehouse.execute(*typed_table(case))

    table = sources.connect().read("SELECT * FROM typed ORDER BY id").read_all()

    assert table.column("id").to_pylist() == [1, 2]
    not_null = {
        c.name: table.column(c.name).to_pylist()[1]
        for c in case.columns
        if table.column(c.name).null_count != 1
    }
    assert not_null == {}, f"NULLs that came back as values: {not_null}"


def test_a_result_of_only_nulls_is_still_read(
    case: SourceCase, warehouse: Warehouse, sources: Sources
) -> None:
    """With no value to infer a type from, every column still reads as nulls."""
    warehouse.execute(*typed_table(case))

    rows = sources.connect().read("SELECT * FROM typed WHERE id = 2").read_all().to_pylist()

    assert rows == [{"id": 2, **{c.name: None for c in case.columns}}]


# --- streaming -----------------------------------------------------------------------------


def test_a_large_result_streams_in_bounded_batches(
    case: SourceCase, warehouse: Warehouse, sources: Sources
) -> None:
    warehouse.execute(f"CREATE TABLE big AS {case.series(ROWS)}")

    reader = sources.connect().read("SELECT n, label FROM big")
    sizes, total, labelled = [], 0, 0
    for batch in iter_batches(reader):
        assert batch.schema == reader.schema
        sizes.append(batch.num_rows)
        numbers, labels = batch.column("n").to_pylist(), batch.column("label").to_pylist()
        total += sum(n for n in numbers if n is not None)
        labelled += sum(label == f"row {n}" for n, label in zip(numbers, labels, strict=True))

    assert len(sizes) >= 3, f"{ROWS} rows came back in {sizes}"
    assert max(sizes) <= BATCH_ROWS, f"a batch larger than {BATCH_ROWS} rows: {sizes}"
    assert sum(sizes) == ROWS and labelled == ROWS
    assert total == ROWS * (ROWS + 1) // 2  # every row once


# --- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "database_says"),
    [("SELECT * FROM no_such_table", "no_such_table"), ("SELEC 1", "SELEC")],
    ids=["missing-table", "syntax"],
)
def test_a_bad_query_is_a_source_error_naming_the_source(
    case: SourceCase, sources: Sources, query: str, database_says: str
) -> None:
    source = sources.connect()

    with pytest.raises(SourceError) as raised:
        source.read(query)

    assert database_says in says_where(case, raised.value)
    # The failed query leaves the connection usable.
    assert source.read("SELECT 1 AS one").read_all().to_pylist() == [{"one": 1}]


def test_a_query_failing_mid_stream_is_a_source_error_naming_the_source(
    case: SourceCase, warehouse: Warehouse, sources: Sources
) -> None:
    warehouse.execute(f"CREATE TABLE big AS {case.series(ROWS)}")
    source = sources.connect()
    reader = source.read(f"SELECT n, {case.fails_at(ROWS - 10)} AS x FROM big")

    first = reader.read_next_batch()  # the rows before the poison one read fine
    with pytest.raises(SourceError) as raised:
        reader.read_all()

    assert first.num_rows > 0
    assert case.fails_saying in says_where(case, raised.value)
    assert source.read("SELECT 1 AS one").read_all().to_pylist() == [{"one": 1}]


def test_a_value_unlike_its_column_type_is_a_source_error_naming_the_source(
    case: SourceCase, warehouse: Warehouse, sources: Sources
) -> None:
    if not case.misfits:
        pytest.skip(f"{case.says} keeps every value to its column's declared type")
    for i, (sql_type, literal) in enumerate(case.misfits):
        warehouse.execute(
            f"CREATE TABLE misfit{i} (id {case.id_type}, x {sql_type})",
            f"INSERT INTO misfit{i} VALUES (1, NULL), (2, {literal})",
        )
    source = sources.connect()

    for i, (_, literal) in enumerate(case.misfits):
        with pytest.raises(SourceError) as raised:
            source.read(f"SELECT id, x FROM misfit{i} ORDER BY id").read_all()
        assert "column 'x'" in says_where(case, raised.value), literal


def test_a_source_cut_off_mid_read_raises_instead_of_returning_fewer_rows(
    case: SourceCase, warehouse: Warehouse, sources: Sources
) -> None:
    warehouse.execute(f"CREATE TABLE big AS {case.series(LOSE_ROWS)}")
    reader = sources.connect().read("SELECT n, label FROM big")
    read = reader.read_next_batch().num_rows

    case.lose(warehouse)  # the connection killed, or the file emptied, between two batches

    with pytest.raises(SourceError) as raised:
        for batch in iter_batches(reader):
            read += batch.num_rows
    says_where(case, raised.value)
    assert read < LOSE_ROWS


def test_a_file_removed_mid_read_still_gives_every_row(
    case: SourceCase, warehouse: Warehouse, sources: Sources, tmp_path: Path
) -> None:
    """The open file outlives its name (POSIX): removing it cannot cut the read short."""
    if case.file is None:
        pytest.skip(f"a {case.type} source reads no file")
    warehouse.execute(f"CREATE TABLE big AS {case.series(ROWS)}")
    reader = sources.connect().read("SELECT n FROM big")
    read = reader.read_next_batch().num_rows

    (tmp_path / case.file).unlink()

    read += sum(batch.num_rows for batch in iter_batches(reader))
    assert read == ROWS


# --- close ---------------------------------------------------------------------------------


@pytest.mark.timeout(60)  # DuckDB, still holding the file, hangs on a writer in-process
def test_close_mid_read_lets_go_of_the_database(
    case: SourceCase, warehouse: Warehouse, sources: Sources
) -> None:
    """A half-read result holds the database (a lock on the table or file, the connection)
    until the source is closed; afterwards the table can be dropped at once."""
    warehouse.execute(f"CREATE TABLE big AS {case.series(ROWS)}")
    source = sources.connect()
    reader = source.read("SELECT n FROM big")
    assert reader.read_next_batch().num_rows > 0

    source.close()

    warehouse.execute("DROP TABLE big")  # an error (lock timeout, file in use) fails here
    case.released(warehouse)
    with pytest.raises(SourceError) as raised:  # the rest is not read as if it were empty
        reader.read_next_batch()
    says_where(case, raised.value)
