"""When schedules come due (pure functions), and the `timezone:` of a mapping in ebbtide.yml."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ebbtide.config.schedule import first_due, next_due
from ebbtide.config.workspace import load_workspace
from ebbtide.errors import ConfigErrors
from tests.unit.test_config_errors import VALID, write

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def test_an_interval_is_due_at_once_then_counts_from_its_last_due_time() -> None:
    assert first_due("15m", T0) == T0
    # Claimed 7 s late: the next slot is still 15 minutes after the due time, no drift.
    assert next_due("15m", T0, T0 + timedelta(seconds=7)) == T0 + timedelta(minutes=15)


def test_missed_interval_slots_come_due_once_in_the_future() -> None:
    # Nothing ran for 3 h 20 min: one run now, and the next slot on the old grid after now.
    now = T0 + timedelta(hours=3, minutes=20)
    assert next_due("1h", T0, now) == T0 + timedelta(hours=4)
    assert next_due("1h", T0, T0 + timedelta(hours=4)) == T0 + timedelta(hours=5)


def test_manual_never_comes_due() -> None:
    assert first_due("manual", T0) is None
    assert next_due("manual", T0, T0) is None


def test_cron_is_due_at_its_next_slot_after_now_and_missed_slots_run_once() -> None:
    assert first_due("0 * * * *", T0 + timedelta(minutes=1)) == T0 + timedelta(hours=1)
    # Due at 13:00, claimed at 17:30: the next slot is 18:00, not 14:00.
    due = T0 + timedelta(hours=1)
    assert next_due("0 * * * *", due, T0 + timedelta(hours=5, minutes=30)) == T0 + timedelta(
        hours=6
    )


def test_cron_in_a_time_zone_reads_that_zones_wall_clock_across_dst_changes() -> None:
    paris = "Europe/Paris"
    # Summer (UTC+2): 09:00 in Paris is 07:00 UTC.
    assert first_due("0 9 * * *", T0, paris) == datetime(2026, 6, 2, 7, 0, tzinfo=UTC)
    # 28 March 2026 09:00 is CET (UTC+1), the next day's 09:00 is CEST (UTC+2): 23 hours apart.
    before = datetime(2026, 3, 28, 8, 0, tzinfo=UTC)
    after = next_due("0 9 * * *", before, before, paris)
    assert after == datetime(2026, 3, 29, 7, 0, tzinfo=UTC)
    # In October the day is 25 hours long.
    october = datetime(2026, 10, 24, 7, 0, tzinfo=UTC)
    assert next_due("0 9 * * *", october, october, paris) == datetime(
        2026, 10, 25, 8, 0, tzinfo=UTC
    )


def test_a_cron_slot_in_the_skipped_hour_runs_just_after_the_change() -> None:
    # 29 March 2026: Paris clocks jump from 02:00 to 03:00; 02:30 does not exist that night.
    slot = first_due("30 2 * * *", datetime(2026, 3, 28, 12, 0, tzinfo=UTC), "Europe/Paris")
    assert slot == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)  # 03:30 CEST
    assert next_due("30 2 * * *", slot, slot, "Europe/Paris") == datetime(
        2026, 3, 30, 0, 30, tzinfo=UTC
    )


def test_a_cron_slot_in_the_repeated_hour_runs_once() -> None:
    # 25 October 2026: Paris clocks go back from 03:00 to 02:00; 02:30 happens twice.
    slot = first_due("30 2 * * *", datetime(2026, 10, 24, 12, 0, tzinfo=UTC), "Europe/Paris")
    assert slot == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # 02:30 CEST, the first one
    # Claimed during the second 02:30 (CET): the next run is the next day's, not in an hour.
    second_time = datetime(2026, 10, 25, 1, 30, tzinfo=UTC)
    assert next_due("30 2 * * *", slot, second_time, "Europe/Paris") == datetime(
        2026, 10, 26, 1, 30, tzinfo=UTC
    )


def test_a_mapping_takes_a_time_zone_for_its_cron_schedule(tmp_path: Path) -> None:
    write(
        tmp_path,
        VALID,
        replace={"    schedule: 15m": '    schedule: "0 2 * * *"\n    timezone: Europe/Paris'},
    )
    mapping = load_workspace(tmp_path).spec.mappings["users_to_crm"]
    assert (mapping.schedule, mapping.schedule_timezone) == ("0 2 * * *", "Europe/Paris")


def test_the_default_time_zone_is_utc(tmp_path: Path) -> None:
    write(tmp_path, VALID)
    assert load_workspace(tmp_path).spec.mappings["users_to_crm"].schedule_timezone == "UTC"


def test_an_unknown_time_zone_is_a_config_error_at_its_line(tmp_path: Path) -> None:
    write(
        tmp_path,
        VALID,
        replace={"    schedule: 15m": '    schedule: "0 2 * * *"\n    timezone: Europe/Pariss'},
    )
    with pytest.raises(ConfigErrors) as raised:
        load_workspace(tmp_path)
    [error] = raised.value.errors
    assert (error.line, error.path) == (25, "mappings.users_to_crm.timezone")
    assert error.message.startswith("'Europe/Pariss' is not a time zone: use an IANA name")
    assert error.file == str(tmp_path / "ebbtide.yml")


def test_a_time_zone_on_an_interval_schedule_is_refused(tmp_path: Path) -> None:
    write(tmp_path, VALID, replace={"    schedule: 15m": "    schedule: 15m\n    timezone: UTC"})
    with pytest.raises(ConfigErrors) as raised:
        load_workspace(tmp_path)
    [error] = raised.value.errors
    assert error.path == "mappings.users_to_crm"
    assert error.message.startswith("timezone applies to cron schedules only: '15m'")


def test_a_zero_interval_is_not_a_schedule(tmp_path: Path) -> None:
    write(tmp_path, VALID, replace={"    schedule: 15m": "    schedule: 0s"})
    with pytest.raises(ConfigErrors, match="an interval must be longer than 0"):
        load_workspace(tmp_path)


def test_spread_slots_sit_at_a_fixed_offset_drawn_from_the_name() -> None:
    now = datetime(2026, 6, 1, 12, 0, 7, tzinfo=UTC)
    slots = {name: next_due("15m", now, now, spread_by=name) for name in ("a", "b", "c", "d")}
    assert all(s is not None and now < s <= now + timedelta(minutes=15) for s in slots.values())
    assert len(set(slots.values())) == 4  # four names, four offsets
    again = next_due("15m", now + timedelta(seconds=1), now + timedelta(seconds=1), spread_by="a")
    assert again == slots["a"]  # whoever computes it, whenever: the same grid
    first = slots["a"]
    assert first is not None
    after = next_due("15m", first, first, spread_by="a")
    assert after == first + timedelta(minutes=15)  # then one interval apart, no drift
    missed = next_due("15m", first, first + timedelta(hours=2, minutes=1), spread_by="a")
    assert missed == first + timedelta(hours=2, minutes=15)  # missed slots run once
