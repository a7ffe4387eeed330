"""The sync history charts: bar heights in proportion, oldest left, empty and single
histories, huge counts, and names escaped."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any
from xml.etree import ElementTree

from ebbtide.server.ui import charts
from ebbtide.services.views import PhaseSeconds, RunView
from ebbtide.values import RunStatus

SVG = "{http://www.w3.org/2000/svg}"
START = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


def run(run_id: int, **counts: Any) -> RunView:
    values: dict[str, Any] = {
        "loaded_new": 0,
        "loaded_updated": 0,
        "loaded_deleted": 0,
        "failed": 0,
        "duration_s": 1.0,
    }
    values.update(counts)
    return RunView(
        id=run_id,
        mapping="users",
        status=RunStatus.PARTIAL_SUCCESS if values["failed"] else RunStatus.SUCCESS,
        trigger="schedule",
        started_at=START + timedelta(minutes=run_id),
        finished_at=None,
        extracted=0,
        added=0,
        updated=0,
        deleted=0,
        skipped=0,
        failed_by_class={},
        retried=0,
        phases_s=PhaseSeconds(extract=None, diff=None, load=None, commit=None),
        error=None,
        actor=None,
        replay_of=None,
        after_reset=False,
        snapshot_size=None,
        forced=False,
        **values,
    )


def parsed(svg: str) -> ElementTree.Element:
    return ElementTree.fromstring(svg)


def heights(bar: charts.Bar) -> dict[str, float]:
    return {s.series.label: s.height for s in bar.segments}


def test_segment_heights_are_proportional_and_the_biggest_sync_fills_the_plot() -> None:
    bars = charts.stack_layout(
        [run(2, loaded_new=30, failed=10), run(1, loaded_new=10, loaded_updated=10)]
    )
    plot = charts.RECORDS_HEIGHT - charts.TOP - charts.BOTTOM
    first, second = bars  # oldest left, whatever order the history gave
    assert (first.run.id, second.run.id) == (1, 2)
    assert first.x < second.x
    assert heights(second) == {"Loaded new": plot * 0.75, "Failed": plot * 0.25}
    assert heights(first) == {"Loaded new": plot * 0.25, "Loaded updated": plot * 0.25}
    # stacked: each segment sits on the one below, from the baseline up
    baseline = charts.RECORDS_HEIGHT - charts.BOTTOM
    new, failed = second.segments
    assert new.y + new.height == baseline and failed.y + failed.height == new.y


def test_the_svg_is_an_accessible_image_with_a_tooltip_per_bar() -> None:
    svg = str(charts.records_chart([run(1, loaded_new=5), run(2, failed=2)], "users"))
    root = parsed(svg)
    assert root.get("role") == "img"
    title, desc = root.find(f"{SVG}title"), root.find(f"{SVG}desc")
    assert title is not None and desc is not None
    assert root.get("aria-labelledby") == f"{title.get('id')} {desc.get('id')}"
    assert title.text == "Records per sync of users"
    assert desc.text == charts.summary([run(1, loaded_new=5), run(2, failed=2)])
    bars = root.findall(f"{SVG}g")
    tips = [g.findtext(f"{SVG}title") or "" for g in bars]
    assert len(tips) == 2
    assert tips[0].startswith("Sync #1 (success)") and "loaded new 5" in tips[0]
    assert tips[1].startswith("Sync #2 (partial_success)") and "failed 2" in tips[1]
    rects = bars[1].findall(f"{SVG}rect")
    assert [(r.get("data-series"), r.get("data-count")) for r in rects] == [("Failed", "2")]


def test_an_empty_history_draws_a_message_not_bars() -> None:
    for chart in (charts.records_chart([], "users"), charts.duration_chart([], "users")):
        root = parsed(str(chart))
        assert root.get("role") == "img"
        assert root.findall(f"{SVG}g") == [] and root.findall(f"{SVG}circle") == []
        assert "No syncs to show" in str(chart)
    assert charts.summary([]) == "No syncs to show."


def test_one_sync_and_a_sync_that_loaded_nothing() -> None:
    [bar] = charts.stack_layout([run(7, loaded_new=3)])
    assert bar.width <= charts.MAX_BAR  # one sync is not a wall across the chart
    assert heights(bar) == {"Loaded new": charts.RECORDS_HEIGHT - charts.TOP - charts.BOTTOM}
    quiet = parsed(str(charts.records_chart([run(8)], "users")))
    [group] = quiet.findall(f"{SVG}g")
    [sliver] = group.findall(f"{SVG}rect")
    assert sliver.get("height") == "1"
    [point] = parsed(str(charts.duration_chart([run(7, duration_s=2.5)], "users"))).findall(
        f"{SVG}circle"
    )
    assert point.findtext(f"{SVG}title") == "Sync #7 took 2.5 s"


def test_huge_counts_stay_inside_the_plot_and_are_written_in_full() -> None:
    big = run(1, loaded_new=2_000_000_000, loaded_updated=3_000_000_000, failed=1)
    bars = charts.stack_layout([big, run(2, loaded_new=1)])
    for bar in bars:
        for segment in bar.segments:
            assert charts.TOP - 1e-6 <= segment.y <= charts.RECORDS_HEIGHT - charts.BOTTOM
    svg = str(charts.records_chart([big], "users"))
    assert "loaded new 2,000,000,000" in svg and ">5,000,000,001<" in svg  # the axis top


def test_durations_are_proportional_and_a_running_sync_has_no_point() -> None:
    points = charts.duration_points([run(1, duration_s=2.0), run(2, duration_s=None),
                                     run(3, duration_s=4.0)])  # fmt: skip
    assert [r.id for r, _, _ in points] == [1, 3]
    baseline = charts.DURATION_HEIGHT - charts.BOTTOM
    (_, _, y1), (_, _, y3) = points
    assert baseline - y3 == 2 * (baseline - y1)
    assert y3 == charts.TOP


def test_names_and_texts_are_escaped() -> None:
    name = '<script>alert("x")</script> & co'
    for chart in (
        charts.records_chart([run(1, loaded_new=1)], name),
        charts.duration_chart([run(1)], name),
        charts.records_chart([], name),
    ):
        text = str(chart)
        assert "<script>" not in text
        root = parsed(text)  # still well-formed XML
        assert root.findtext(f"{SVG}title") == f"Records per sync of {name}" or (
            root.findtext(f"{SVG}title") == f"Duration per sync of {name}"
        )


def test_the_summary_says_what_the_bars_show() -> None:
    text = charts.summary([run(2, loaded_new=4, failed=3), run(1, loaded_updated=1)])
    assert text.startswith("2 sync(s) from #1 to #2")
    assert "4 loaded new, 1 loaded updated, 0 loaded deleted, 3 failed" in text
    assert "sync #2 (3)" in text
    assert re.search(r"Most failed", charts.summary([run(1)])) is None
