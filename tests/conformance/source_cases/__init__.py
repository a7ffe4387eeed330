"""More source cases, one module each defining `CASE` (a `SourceCase`): MySQL/MariaDB, files,
SQLAlchemy URLs. tests/conformance/source_case.py collects them after its own three."""
