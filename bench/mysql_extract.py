"""`python -m bench.mysql_extract [--rows N] [--url mysql://…]`: how fast the MySQL/MariaDB
source reads a table into Arrow.

Builds a table of N rows (default 1,000,000) and 6 columns (BIGINT, two VARCHARs,
DECIMAL(12, 2), DATETIME(6), DOUBLE) in a database of its own on the server (MariaDB on
127.0.0.1:3306, root, no password, unless --url says otherwise), reads it through the source
as the engine does (batch by batch, nothing kept), and, for comparison, through PyMySQL's
unbuffered cursor with its own converters (a Python object per value, no Arrow). Prints a small
table, then drops the database.
"""

from __future__ import annotations

import argparse
import resource
import time
import uuid
from collections.abc import Callable
from urllib.parse import urlsplit

import pymysql
import pymysql.cursors

from ebbtide.ports import iter_batches
from ebbtide.sources.mysql import MySQLSource, connect_options

TABLE = """
CREATE TABLE users (
    id BIGINT PRIMARY KEY, email VARCHAR(64), plan VARCHAR(16), ltv DECIMAL(12, 2),
    updated_at DATETIME(6), score DOUBLE
) ENGINE=InnoDB
"""
FILL = """
INSERT INTO users
SELECT seq, CONCAT('user', seq, '@example.com'), ELT(1 + seq % 4, 'free', 'starter', 'pro',
       'enterprise'), (seq * 37) % 1000000 / 100, TIMESTAMP('2026-01-01') + INTERVAL seq SECOND,
       seq / 7
FROM seq_1_to_{rows}
"""
QUERY = "SELECT id, email, plan, ltv, updated_at, score FROM users"


def through_source(url: str) -> int:
    source = MySQLSource(url)
    try:
        return sum(batch.num_rows for batch in iter_batches(source.read(QUERY)))
    finally:
        source.close()


def through_pymysql_objects(url: str) -> int:
    con = pymysql.connect(**connect_options(url), charset="utf8mb4")
    try:
        with con.cursor(pymysql.cursors.SSCursor) as cursor:
            cursor.execute(QUERY)
            rows = 0
            while chunk := cursor.fetchmany(65_536):
                rows += len(chunk)
            return rows
    finally:
        con.close()


def timed(read: Callable[[str], int], url: str) -> tuple[int, float]:
    started = time.perf_counter()
    rows = read(url)
    return rows, time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.mysql_extract", description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--url", default="mysql://root:@127.0.0.1:3306/test")
    args = parser.parse_args(argv)
    database = f"ebb_bench_{uuid.uuid4().hex[:8]}"
    admin = pymysql.connect(**connect_options(args.url), autocommit=True)
    url = urlsplit(args.url)._replace(path=f"/{database}").geturl()
    try:
        with admin.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {database}")
            cursor.execute(f"USE {database}")
            cursor.execute(TABLE)
            started = time.perf_counter()
            cursor.execute(FILL.format(rows=args.rows))
            print(f"built {args.rows:,} rows x 6 columns in {time.perf_counter() - started:.1f}s")
        results = [
            ("ebbtide source -> Arrow batches", *timed(through_source, url)),
            ("PyMySQL SSCursor, Python objects", *timed(through_pymysql_objects, url)),
        ]
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {database}")
        admin.close()
    print(f"{'reader':<34} {'rows':>10} {'seconds':>8} {'rows/s':>10}")
    for name, rows, seconds in results:
        print(f"{name:<34} {rows:>10,} {seconds:>8.2f} {rows / seconds:>10,.0f}")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process: {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
