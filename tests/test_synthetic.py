"""The synthetic call's job metadata: how long it holds, and whether it joins its room."""

from __future__ import annotations

import pytest

from voice_worker.synthetic import MAX_HOLD_S, hold_seconds, joins_room


@pytest.mark.parametrize(
    ("metadata", "seconds"),
    [
        ("", 30.0),
        ('{"hold_seconds": 12.5}', 12.5),
        ('{"hold_seconds": -4}', 0.0),
        ('{"hold_seconds": 999999}', MAX_HOLD_S),
        ('{"hold_seconds": "soon"}', 30.0),
        ("not json", 30.0),
        ("[1, 2]", 30.0),
    ],
)
def test_hold_seconds(metadata: str, seconds: float) -> None:
    assert hold_seconds(metadata) == seconds


@pytest.mark.parametrize(
    ("metadata", "joins"),
    [
        ("", False),
        ('{"hold_seconds": 5}', False),
        ('{"join": true}', True),
        ('{"join": "yes"}', False),
        ('{"join": 1}', False),
        ("not json", False),
    ],
)
def test_joins_room_only_when_asked_with_true(metadata: str, joins: bool) -> None:
    assert joins_room(metadata) is joins
