"""Moments as whole microseconds since the Unix epoch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from dicom_core.model.epoch import EPOCH, to_micros


def test_the_epoch_is_zero_and_earlier_moments_are_negative() -> None:
    assert to_micros(EPOCH) == 0
    assert to_micros(EPOCH - timedelta(microseconds=1)) == -1


def test_a_moment_counts_every_microsecond_in_any_time_zone() -> None:
    moment = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)

    assert to_micros(moment) == 1_714_564_800_123_456
    assert to_micros(moment.astimezone(timezone(timedelta(hours=2)))) == 1_714_564_800_123_456
