"""fephp.acme's renewal decisions: due at two thirds of the lifetime less jitter, retries doubling up to the expiry."""

from __future__ import annotations

import datetime
import itertools

from fephp.acme import is_renewal_due, renewal_due_at, retry_delays
from fephp.acme.renewal import RETRY_FIRST, RETRY_MAX

DAY = datetime.timedelta(days=1)
START = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
END = START + 90 * DAY


def test_a_90_day_certificate_without_jitter_is_due_after_60_days() -> None:
    """Jitter 0: due on day 60 exactly (2026-03-02 00:00 UTC), not a microsecond before."""
    assert renewal_due_at(START, END, 0.0) == datetime.datetime(2026, 3, 2, tzinfo=datetime.timezone.utc)
    assert is_renewal_due(START + 60 * DAY, START, END, 0.0) is True
    assert is_renewal_due(START + 60 * DAY - datetime.timedelta(microseconds=1), START, END, 0.0) is False


def test_the_jitter_brings_renewal_forward_by_up_to_a_thirtieth_of_the_lifetime() -> None:
    """Jitter 0.5 on 90 days: 1.5 days earlier (day 58.5); jitter just under 1: almost 3 days earlier."""
    assert renewal_due_at(START, END, 0.5) == datetime.datetime(2026, 2, 28, 12, tzinfo=datetime.timezone.utc)
    assert is_renewal_due(START + 58 * DAY, START, END, 0.5) is False
    assert is_renewal_due(START + 58.5 * DAY, START, END, 0.5) is True
    assert renewal_due_at(START, END, 0.999) == START + 60 * DAY - 90 * DAY * 0.999 / 30


def test_a_short_lived_certificate_scales_the_same_way() -> None:
    """A 6-day certificate (Let's Encrypt's short-lived profile) is due after 4 days, 2.4 h earlier at jitter 0.5."""
    end = START + 6 * DAY
    assert renewal_due_at(START, end, 0.0) == START + 4 * DAY
    assert renewal_due_at(START, end, 0.5) == START + 4 * DAY - datetime.timedelta(hours=2.4)


def test_retries_double_from_a_minute_up_to_six_hours() -> None:
    """Far from expiry, with no jitter: 60, 120, 240 ... seconds, then RETRY_MAX (21600) for good."""
    delays = list(itertools.islice(retry_delays(lambda: START, END, lambda: 0.0), 11))
    assert (RETRY_FIRST, RETRY_MAX) == (60.0, 21600.0)
    assert delays == [60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 3840.0, 7680.0, 15360.0, 21600.0, 21600.0]


def test_the_jitter_is_added_to_each_retry() -> None:
    """The injected jitter (here 7 s) is added to every delay, as backoffPolicy does."""
    assert list(itertools.islice(retry_delays(lambda: START, END, lambda: 7.0), 3)) == [67.0, 127.0, 247.0]


def test_no_retry_waits_past_the_expiry_while_it_is_ahead() -> None:
    """With 5 minutes left the 8-minute retry waits 5; once expired, retries go on at their own pace."""
    now = [END - datetime.timedelta(minutes=5)]
    delays = retry_delays(lambda: now[0], END, lambda: 0.0)
    assert [next(delays) for _ in range(3)] == [60.0, 120.0, 240.0]
    assert next(delays) == 300.0
    now[0] = END + datetime.timedelta(seconds=1)
    assert next(delays) == 960.0
