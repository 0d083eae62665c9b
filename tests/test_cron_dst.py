"""The DST rule (DESIGN.md §13) with a fake clock: fire times computed for given instants across
both transitions of America/New_York, Europe/Berlin, Australia/Lord_Howe (a 30-minute shift)
and a zone without DST, for hourly, daily and every-15-minutes expressions.

The rule: a local time that does not exist fires once at the first instant after the gap
("shifted"); a repeated local time fires once, at its first occurrence ("deduplicated").
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dispatched import cron
from dispatched.errors import BadRequest

pytestmark = pytest.mark.unit

#: (zone, spring-forward day, fall-back day) in 2026, local dates.
TRANSITIONS = [
    ("America/New_York", datetime(2026, 3, 8), datetime(2026, 11, 1)),
    ("Europe/Berlin", datetime(2026, 3, 29), datetime(2026, 10, 25)),
    ("Australia/Lord_Howe", datetime(2026, 10, 4), datetime(2026, 4, 5)),
    ("Asia/Tokyo", datetime(2026, 3, 8), datetime(2026, 11, 1)),  # no DST since 1951
]
EXPRESSIONS = ["0 * * * *", "30 2 * * *", "30 1 * * *", "*/15 * * * *", "@hourly", "45 1 * * *"]


def fires_on(expression: str, zone: str, day: datetime, count: int = 200) -> list[cron.Fire]:
    """The fires from local midnight before ``day`` to local midnight after it."""
    tz = cron.zone(zone)
    start = (day - timedelta(hours=1)).replace(tzinfo=tz).astimezone(UTC)
    end = (day + timedelta(days=1, hours=1)).replace(tzinfo=tz).astimezone(UTC)
    return [f for f in cron.fires_after(cron.parse(expression), tz, start, count) if f.at < end]


def table(fires: list[cron.Fire]) -> list[str]:
    """``local(offset)=UTC[/note]`` strings, e.g. ``03:00-0400=07:00Z/shifted``, for the
    interesting part of the transition night (the day's local 00:00-04:59)."""
    day = fires[len(fires) // 2].local.date() if len(fires) > 2 else None
    return [
        f"{f.local:%H:%M%z}={f.at:%H:%M}Z" + (f"/{f.dst}" if f.dst else "")
        for f in fires
        if f.local.hour < 5 and (day is None or f.local.date() == day)
    ]


# -- the rule, stated for each zone and expression ---------------------------------------------


def test_new_york_spring_forward():
    day = datetime(2026, 3, 8)
    assert table(fires_on("0 * * * *", "America/New_York", day)) == [
        "00:00-0500=05:00Z",
        "01:00-0500=06:00Z",
        "03:00-0400=07:00Z/shifted",  # 02:00 does not exist: first instant after the gap
        "04:00-0400=08:00Z",
    ]
    quarter = table(fires_on("*/15 * * * *", "America/New_York", day))
    at_gap = quarter[quarter.index("01:45-0500=06:45Z") :][:3]
    # 02:00, 02:15, 02:30, 02:45 do not exist: with 03:00 they are one fire, at 03:00 EDT.
    assert at_gap == ["01:45-0500=06:45Z", "03:00-0400=07:00Z/shifted", "03:15-0400=07:15Z"]
    assert table(fires_on("30 2 * * *", "America/New_York", day)) == ["03:00-0400=07:00Z/shifted"]


def test_new_york_fall_back():
    day = datetime(2026, 11, 1)
    hourly = table(fires_on("0 * * * *", "America/New_York", day))
    # 01:00 happens twice: it fires at the first one (EDT) only; the next fire is 02:00 EST.
    assert hourly == [
        "00:00-0400=04:00Z",
        "01:00-0400=05:00Z/deduplicated",
        "02:00-0500=07:00Z",
        "03:00-0500=08:00Z",
        "04:00-0500=09:00Z",
    ]
    quarter = table(fires_on("*/15 * * * *", "America/New_York", day))
    assert quarter[4:10] == [
        "01:00-0400=05:00Z/deduplicated",
        "01:15-0400=05:15Z/deduplicated",
        "01:30-0400=05:30Z/deduplicated",
        "01:45-0400=05:45Z/deduplicated",
        "02:00-0500=07:00Z",
        "02:15-0500=07:15Z",
    ]
    assert table(fires_on("30 1 * * *", "America/New_York", day)) == [
        "01:30-0400=05:30Z/deduplicated"
    ]
    assert table(fires_on("30 2 * * *", "America/New_York", day)) == ["02:30-0500=07:30Z"]


def test_berlin_both_transitions():
    spring, autumn = datetime(2026, 3, 29), datetime(2026, 10, 25)
    assert table(fires_on("0 * * * *", "Europe/Berlin", spring)) == [
        "00:00+0100=23:00Z",
        "01:00+0100=00:00Z",
        "03:00+0200=01:00Z/shifted",
        "04:00+0200=02:00Z",
    ]
    assert table(fires_on("30 2 * * *", "Europe/Berlin", spring)) == ["03:00+0200=01:00Z/shifted"]
    assert table(fires_on("0 * * * *", "Europe/Berlin", autumn)) == [
        "00:00+0200=22:00Z",
        "01:00+0200=23:00Z",
        "02:00+0200=00:00Z/deduplicated",
        "03:00+0100=02:00Z",
        "04:00+0100=03:00Z",
    ]
    quarter = table(fires_on("*/15 * * * *", "Europe/Berlin", autumn))
    assert quarter[8:13] == [
        "02:00+0200=00:00Z/deduplicated",
        "02:15+0200=00:15Z/deduplicated",
        "02:30+0200=00:30Z/deduplicated",
        "02:45+0200=00:45Z/deduplicated",
        "03:00+0100=02:00Z",
    ]
    assert table(fires_on("30 2 * * *", "Europe/Berlin", autumn)) == [
        "02:30+0200=00:30Z/deduplicated"
    ]


def test_lord_howe_thirty_minute_shift():
    spring, autumn = datetime(2026, 10, 4), datetime(2026, 4, 5)
    # 02:00 → 02:30: 02:00 and 02:15 do not exist; 02:30 is the first instant after the gap.
    assert table(fires_on("0 * * * *", "Australia/Lord_Howe", spring)) == [
        "00:00+1030=13:30Z",
        "01:00+1030=14:30Z",
        "02:30+1100=15:30Z/shifted",  # cronsim and croniter both drop this fire
        "03:00+1100=16:00Z",
        "04:00+1100=17:00Z",
    ]
    quarter = table(fires_on("*/15 * * * *", "Australia/Lord_Howe", spring))
    assert quarter[6:9] == [
        "01:30+1030=15:00Z",
        "01:45+1030=15:15Z",
        "02:30+1100=15:30Z/shifted",
    ]
    assert quarter[9] == "02:45+1100=15:45Z"
    assert table(fires_on("15 2 * * *", "Australia/Lord_Howe", spring)) == [
        "02:30+1100=15:30Z/shifted"
    ]
    # 02:00 → 01:30: 01:30-01:59 happen twice, fired at the first (+11:00) only.
    quarter = table(fires_on("*/15 * * * *", "Australia/Lord_Howe", autumn))
    assert quarter[4:10] == [
        "01:00+1100=14:00Z",
        "01:15+1100=14:15Z",
        "01:30+1100=14:30Z/deduplicated",
        "01:45+1100=14:45Z/deduplicated",
        "02:00+1030=15:30Z",
        "02:15+1030=15:45Z",
    ]
    assert table(fires_on("45 1 * * *", "Australia/Lord_Howe", autumn)) == [
        "01:45+1100=14:45Z/deduplicated"  # croniter fires this one twice
    ]
    hourly = table(fires_on("0 * * * *", "Australia/Lord_Howe", autumn))
    assert hourly[:4] == [
        "00:00+1100=13:00Z",
        "01:00+1100=14:00Z",
        "02:00+1030=15:30Z",
        "03:00+1030=16:30Z",
    ]


@pytest.mark.parametrize("day", [datetime(2026, 3, 8), datetime(2026, 11, 1)])
def test_zone_without_dst_is_plain_arithmetic(day):
    tz = cron.zone("Asia/Tokyo")
    for expression, step in [("*/15 * * * *", 15), ("0 * * * *", 60), ("30 2 * * *", 1440)]:
        fires = fires_on(expression, "Asia/Tokyo", day)
        assert all(f.dst is None for f in fires)
        gaps = {(b.at - a.at) for a, b in zip(fires, fires[1:], strict=False)}
        assert gaps <= {timedelta(minutes=step)}
        assert all(f.local.utcoffset() == timedelta(hours=9) for f in fires)
        assert all(f.local == f.at.astimezone(tz) for f in fires)


# -- properties over every zone, transition and expression -----------------------------------


@pytest.mark.parametrize("expression", EXPRESSIONS)
@pytest.mark.parametrize(("zone", "spring", "autumn"), TRANSITIONS)
def test_every_local_time_fires_exactly_once(zone, spring, autumn, expression):
    """Each matching local wall-clock time of the day has exactly one fire: at itself (its
    first occurrence when repeated), or at the first instant after the gap when skipped."""
    tz = cron.zone(zone)
    for day in (spring, autumn):
        fires = fires_on(expression, zone, day)
        instants = [f.at for f in fires]
        assert instants == sorted(set(instants)), "strictly increasing, no duplicates"
        for fire in fires:
            before = (fire.at - timedelta(seconds=1)).astimezone(tz)
            if fire.dst == cron.SHIFTED:
                assert before.utcoffset() != fire.local.utcoffset(), "right after a gap"
            else:
                naive = fire.local.replace(tzinfo=None)
                assert fire.at == naive.replace(tzinfo=tz, fold=0).astimezone(UTC)
            if fire.dst == cron.DEDUPLICATED:
                assert fire.local.fold == 0
        # No fire in the second occurrence of a repeated hour.
        assert not any(
            f.local.replace(tzinfo=None).replace(tzinfo=tz, fold=0).astimezone(UTC) != f.at
            and f.dst != cron.SHIFTED
            for f in fires
        )
        # Every matching wall-clock time of the day is covered.
        wall = list(_matching_local_times(expression, day))
        for local in wall:
            at, _ = cron.place(local, tz)
            assert at in instants, f"{local} has no fire"


def _matching_local_times(expression: str, day: datetime):
    from cronsim import CronSim

    for local in CronSim(cron.parse(expression), day - timedelta(seconds=1)):
        if local >= day + timedelta(days=1):
            return
        yield local


@pytest.mark.parametrize(("zone", "spring", "autumn"), TRANSITIONS)
def test_next_and_latest_agree_across_transitions(zone, spring, autumn):
    """Stepping a fake clock minute by minute: the next fire after t and the latest fire at or
    before t are neighbours of one list, also inside a repeated hour."""
    tz = cron.zone(zone)
    expression = cron.parse("*/15 * * * *")
    for day in (spring, autumn):
        fires = fires_on(expression, zone, day)
        start = fires[2].at
        now = start
        while now < fires[-3].at:
            nxt = cron.next_fire(expression, tz, now)
            latest = cron.latest_fire(expression, tz, now)
            assert nxt is not None and latest is not None
            i = [f.at for f in fires].index(nxt.at)
            assert fires[i - 1] == latest, (now, latest, fires[i - 1])
            assert nxt == fires[i]
            now += timedelta(minutes=1)


def test_fire_notes_survive_next_fire_from_inside_a_gap_neighbourhood():
    tz = cron.zone("America/New_York")
    shifted = cron.next_fire("*/15 * * * *", tz, datetime(2026, 3, 8, 6, 50, tzinfo=UTC))
    assert shifted == cron.Fire(
        datetime(2026, 3, 8, 7, 0, tzinfo=UTC),
        datetime(2026, 3, 8, 7, 0, tzinfo=UTC).astimezone(tz),
        cron.SHIFTED,
    )
    # From the second 01:10 (EST), the repeated 01:15-01:45 are behind us: next is 02:00 EST.
    inside = datetime(2026, 11, 1, 6, 10, tzinfo=UTC)
    assert cron.next_fire("*/15 * * * *", tz, inside).at == datetime(2026, 11, 1, 7, 0, tzinfo=UTC)
    assert cron.latest_fire("*/15 * * * *", tz, inside).at == datetime(
        2026, 11, 1, 5, 45, tzinfo=UTC
    )


# -- parsing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "normalized"),
    [
        ("@hourly", "0 * * * *"),
        ("@DAILY", "0 0 * * *"),
        ("@weekly", "0 0 * * 0"),
        ("@monthly", "0 0 1 * *"),
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@midnight", "0 0 * * *"),
        ("  0   9 * *  MON-FRI ", "0 9 * * MON-FRI"),
        ("*/5 1-3,22 1,15 JAN-MAR,dec sun", "*/5 1-3,22 1,15 JAN-MAR,dec sun"),
        ("0 0 29 2 *", "0 0 29 2 *"),  # leap days exist
        ("0 0 30 2 MON", "0 0 30 2 MON"),  # day-of-month OR day-of-week: Mondays of February
        ("0 0 L * *", "0 0 L * *"),
    ],
)
def test_valid_expressions(expression, normalized):
    assert cron.parse(expression) == normalized
    assert cron.next_fire(normalized, cron.zone("UTC"), datetime(2026, 1, 1, tzinfo=UTC))


@pytest.mark.parametrize(
    ("expression", "fragment", "cron_field"),
    [
        ("0 0 30 2 *", "never fires: the day-of-month field '30'", "day-of-month"),
        ("0 0 31 4,6,9,11 *", "never fires: the day-of-month field '31'", "day-of-month"),
        ("61 * * * *", "the minute field '61'", "minute"),
        ("0 24 * * *", "the hour field '24'", "hour"),
        ("0 0 32 * *", "the day-of-month field '32'", "day-of-month"),
        ("0 0 * 13 *", "the month field '13'", "month"),
        ("0 0 * * 8", "the day-of-week field '8'", "day-of-week"),
        ("0 0 * * FUNDAY", "the day-of-week field 'FUNDAY'", "day-of-week"),
        ("*/0 * * * *", "the minute field '*/0'", "minute"),
        ("* * * * * *", "a seconds field is not supported", None),
        ("0 0 * * * 2026", "has 6 fields", None),
        ("* * * *", "has 4 fields; expected 5", None),
        ("@reboot", "not a known shorthand", None),
        ("@every 5m", "not a known shorthand", None),
        ("", "1-120 characters", None),
        ("H * * * *", "the minute field 'H'", "minute"),
        ("0 0 ? * *", "day-of-month", "day-of-month"),
    ],
)
def test_invalid_expressions_name_the_field(expression, fragment, cron_field):
    with pytest.raises(BadRequest) as caught:
        cron.parse(expression)
    assert fragment in caught.value.message
    assert caught.value.data["field"] == "cron"
    assert caught.value.data.get("cronField") == cron_field


def test_zone_validation():
    assert str(cron.zone("Australia/Lord_Howe")) == "Australia/Lord_Howe"
    for bad, fragment in [
        ("Mars/Olympus_Mons", "not an IANA time zone name"),
        ("america/new_york", "did you mean 'America/New_York'?"),
        ("../../etc/passwd", "not an IANA time zone name"),
        ("", "not an IANA time zone name"),
        (5, "must be an IANA zone name"),
    ]:
        with pytest.raises(BadRequest) as caught:
            cron.zone(bad)
        assert fragment in caught.value.message
        assert caught.value.data["field"] == "timezone"
