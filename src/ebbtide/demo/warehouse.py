"""A sample DuckDB warehouse: users with an object column, orders with an array of objects."""

from __future__ import annotations

from pathlib import Path

import duckdb

PLANS = "['free', 'starter', 'pro', 'enterprise']"
CITIES = "['Lisbon', 'Oslo', 'Austin', 'Nairobi', 'Osaka', 'Lima']"


def build_warehouse(path: Path, users: int = 3000, orders: int = 8000) -> None:
    """Create (or replace) the demo tables in `path`."""
    with duckdb.connect(str(path)) as con:
        con.execute(f"""
            CREATE OR REPLACE TABLE users AS
            SELECT i AS id,
                   -- a few broken addresses, so the demo shows how rejected records are explained
                   CASE WHEN i % 997 = 13 THEN 'user' || i || '.example.com'
                        ELSE 'user' || i || '@example.com' END AS email,
                   'User ' || i AS name,
                   {PLANS}[1 + i % 4] AS plan,
                   round((i * 37 % 5000) + 0.99, 2)::DECIMAL(12, 2) AS ltv,
                   TIMESTAMP '2026-01-01' + to_minutes(i) AS updated_at,
                   {{'street': i || ' Harbour Road', 'city': {CITIES}[1 + i % 6],
                     'country_code': 'XX'}}
                       AS address
            FROM range(1, {users} + 1) t(i)""")
        con.execute(f"""
            CREATE OR REPLACE TABLE orders AS
            SELECT 100000 + o AS order_id,
                   1 + (o * 7919) % {users} AS user_id,
                   ['placed', 'paid', 'shipped'][1 + o % 3] AS status,
                   list_transform(range(1 + o % 3), j -> {{
                       'sku': 'SKU-' || (o + j) % 50,
                       'product_name': ['jacket', 'socks', 'boots', 'scarf'][1 + (o + j) % 4],
                       'quantity': 1 + j,
                       'price': (5 + (o + j) % 40)::DECIMAL(8, 2)}}) AS items,
                   TIMESTAMP '2026-02-01' + to_minutes(o) AS placed_at
            FROM range(1, {orders} + 1) t(o)""")


def change_warehouse(path: Path) -> dict[str, int]:
    """Update, delete and add rows, as a day in a real warehouse would."""
    with duckdb.connect(str(path)) as con:
        upgraded = con.execute(
            "UPDATE users SET plan = 'enterprise', ltv = ltv + 100 WHERE id % 50 = 0"
        ).fetchone()
        removed = con.execute("DELETE FROM users WHERE id % 101 = 0").fetchone()
        top = con.execute("SELECT max(id) FROM users").fetchone()
        start = int(top[0]) + 1 if top else 1
        con.execute(f"""
            INSERT INTO users SELECT i, 'user' || i || '@example.com', 'User ' || i, 'free',
                0.00, TIMESTAMP '2026-03-01',
                {{'street': 'New Street', 'city': 'Oslo', 'country_code': 'NO'}}
            FROM range({start}, {start} + 25) t(i)""")
        shipped = con.execute(
            "UPDATE orders SET status = 'shipped' WHERE order_id % 40 = 0"
        ).fetchone()
    return {
        "users upgraded": int(upgraded[0]) if upgraded else 0,
        "users deleted": int(removed[0]) if removed else 0,
        "users added": 25,
        "orders shipped": int(shipped[0]) if shipped else 0,
    }
