"""The state store: runs, per-record failures and leases, in SQLite or PostgreSQL."""
