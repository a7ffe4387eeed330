"""The web UI's shipped static files are exactly the published builds VENDORED.md names, and
every file a template loads is shipped."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import ebbtide.server.ui

UI = Path(ebbtide.server.ui.__file__).parent
ROW = re.compile(r"^\| `([^`]+)` \|.*\| `([0-9a-f]{64})` \|$", re.MULTILINE)


def test_vendored_files_match_their_recorded_checksums() -> None:
    rows = ROW.findall((UI / "static" / "VENDORED.md").read_text())
    assert len(rows) >= 2
    for name, digest in rows:
        assert hashlib.sha256((UI / "static" / name).read_bytes()).hexdigest() == digest, name


def test_every_static_file_a_template_loads_is_shipped() -> None:
    wanted = {
        m
        for template in (UI / "templates").glob("*.html")
        for m in re.findall(r'(?:src|href)="/static/([^"]+)"', template.read_text())
    }
    assert wanted, "base.html loads its scripts and stylesheet from /static"
    assert {name for name in wanted if not (UI / "static" / name).is_file()} == set()
