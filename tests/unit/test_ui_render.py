"""How the web UI writes times, durations, counts and statuses: the same on every page."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from ebbtide.server.ui.render import duration, number, pretty_json, status_label, when
from ebbtide.server.ui.session import safe_next


def test_times_are_written_in_utc_to_the_second() -> None:
    paris = timezone(timedelta(hours=1))
    assert when(datetime(2026, 12, 2, 15, 4, 5, 999, tzinfo=paris)) == "2026-12-02 14:04:05 UTC"
    assert when("2026-12-02T14:04:05+00:00") == "2026-12-02 14:04:05 UTC"
    assert when(None) == "—"


def test_durations_read_at_a_glance() -> None:
    assert [duration(s) for s in (0.0123, 4.56, 65, 3 * 3600 + 125, None)] == [
        "12 ms",
        "4.6 s",
        "1m 05s",
        "3h 02m",
        "—",
    ]


def test_counts_and_statuses_are_written_for_people() -> None:
    assert number(1234567) == "1,234,567"
    assert status_label("partial_success") == "Partial success"
    assert pretty_json('{"a":{"b":1}}') == '{\n  "a": {\n    "b": 1\n  }\n}'
    assert pretty_json("not json") == "not json"


def test_after_login_only_a_path_of_this_site_is_followed() -> None:
    assert safe_next("/runs/7?x=1") == "/runs/7?x=1"
    for outside in ("https://evil.example", "//evil.example", "/\\evil.example", "", None):
        assert safe_next(outside) == "/"
