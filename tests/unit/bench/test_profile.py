"""Summarising py-spy's raw stacks."""

from __future__ import annotations

import pytest

from messenger.bench.profile import summarise_raw

RAW = """\
main (app.py:1);handle (app.py:10);query (db.py:5) 6
main (app.py:1);handle (app.py:10);encode (json.py:3) 3
main (app.py:1);idle (loop.py:9) 1
not a stack line
"""


def test_self_time_counts_the_frame_on_top_of_each_stack() -> None:
    summary = summarise_raw(RAW)
    assert summary["samples"] == 10
    first = summary["self"][0]
    assert first["frame"] == "query (db.py:5)" and first["share"] == pytest.approx(0.6)


def test_inclusive_time_counts_every_frame_once_per_sample() -> None:
    inclusive = {e["frame"]: e["share"] for e in summarise_raw(RAW)["inclusive"]}
    assert inclusive["main (app.py:1)"] == pytest.approx(1.0)
    assert inclusive["handle (app.py:10)"] == pytest.approx(0.9)


def test_no_samples_gives_an_empty_summary() -> None:
    assert summarise_raw("") == {"samples": 0, "self": [], "inclusive": []}


def test_process_pseudo_frames_are_dropped_and_bare_ones_count_as_native() -> None:
    raw = 'process 1:"python -m granian";handle (app.py:10) 3\nprocess 1:"python -m granian" 1\n'
    summary = summarise_raw(raw)
    frames = [e["frame"] for e in summary["self"]]
    assert frames[0] == "handle (app.py:10)"
    assert frames[1].startswith("(no Python frame")
    assert all(not e["frame"].startswith("process ") for e in summary["inclusive"])
