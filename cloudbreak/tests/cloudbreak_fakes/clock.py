"""Timestamps the fakes report, taken from the clock (never a date written in a test).

GKE reports ``createTime`` in RFC 3339 UTC (``2026-11-21T10:00:00+00:00``); Compute Engine reports
``creationTimestamp`` in RFC 3339 with the zone's Pacific offset and milliseconds
(``2026-11-21T02:00:00.000-08:00``). Tests that need an age pass ``ago=`` relative to a ``now``
they hold, so the same test gives the same result on any day.
"""

from __future__ import annotations

import datetime

PACIFIC = datetime.timezone(datetime.timedelta(hours=-8))


def utc_now() -> datetime.datetime:
    """The clock, in UTC, to the second."""
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0)


def gke_time(now: datetime.datetime | None = None, ago: datetime.timedelta = datetime.timedelta()) -> str:
    """A GKE ``createTime`` ``ago`` before ``now`` (the clock when None)."""
    return ((now or utc_now()) - ago).astimezone(datetime.UTC).isoformat()


def compute_time(now: datetime.datetime | None = None, ago: datetime.timedelta = datetime.timedelta()) -> str:
    """A Compute Engine ``creationTimestamp`` ``ago`` before ``now`` (the clock when None)."""
    return ((now or utc_now()) - ago).astimezone(PACIFIC).isoformat(timespec="milliseconds")
