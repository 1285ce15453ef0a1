"""Tests of espi.local_time: ESPI LocalTimeParameters (TimeConfiguration) → time zones (espi.md §1.6).

The zone comparisons are exhaustive on purpose: a rule engine that is off by one hour on one day a year
passes any spot check. They step hour by hour through 2007-2030 in both directions (UTC → local with fold,
and every local wall time with fold 0 and 1 → offset), against zoneinfo.
"""

from __future__ import annotations

import calendar
import contextlib
import functools
import pickle
from datetime import UTC, date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pytest
from conftest import sample_files
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from espi.errors import EspiError
from espi.local_time import (
    CANDIDATE_ZONES,
    DST_DISABLED,
    DstRule,
    LocalTimeError,
    LocalTimeParameters,
    LocalTimeZone,
    assess,
    decode_dst_rule,
    encode_dst_rule,
    iana_candidates,
    zone_for,
)
from espi.xmlsafe import secure_parse

US_START, US_END = "360E2000", "B40E2000"


def us(tz_offset: int, dst_offset: int = 3600) -> LocalTimeParameters:
    return LocalTimeParameters(US_START, US_END, dst_offset, tz_offset)


def require_zone(name: str) -> ZoneInfo:
    """zoneinfo needs the system tz database (or the tzdata package); without it nothing can be compared."""
    try:
        return ZoneInfo(name)
    except ZoneInfoNotFoundError:
        pytest.skip(f"tz database lacks {name}")


# Sydney since 2008: DST from the first Sunday of October 02:00 AEST to the first Sunday of April 03:00 AEDT.
# The end rule carries 03:00 because a rule's clock time is the wall time in force just before the change.
SYDNEY_START = DstRule(month=10, operator=2, day_of_month=0, day_of_week=7, hour=2, seconds=0)
SYDNEY_END = DstRule(month=4, operator=2, day_of_month=0, day_of_week=7, hour=3, seconds=0)
SYDNEY = LocalTimeParameters(SYDNEY_START.hex, SYDNEY_END.hex, 3600, 36000)


# -- decoding: the worked examples ---------------------------------------------------------------------------


def test_worked_example_start_rule():
    rule = decode_dst_rule("360E2000")
    assert rule == DstRule(month=3, operator=3, day_of_month=0, day_of_week=7, hour=2, seconds=0)
    assert rule.describe() == "2nd Sunday of March at 02:00"
    assert [rule.transition(y) for y in (2007, 2024, 2025)] == [
        datetime(2007, 3, 11, 2),
        datetime(2024, 3, 10, 2),
        datetime(2025, 3, 9, 2),
    ]


def test_worked_example_end_rule():
    rule = decode_dst_rule("B40E2000")
    assert rule == DstRule(month=11, operator=2, day_of_month=0, day_of_week=7, hour=2, seconds=0)
    assert rule.describe() == "1st Sunday of November at 02:00"
    assert rule.transition(2024) == datetime(2024, 11, 3, 2)
    assert rule.transition(2026) == datetime(2026, 11, 1, 2)


def test_xsd_example_third_friday_of_march_at_0145():
    # espi.xsd DstRuleType: seconds 2700, hour 1, weekday 5, day 0, operator 4, month 3.
    rule = DstRule(month=3, operator=4, day_of_month=0, day_of_week=5, hour=1, seconds=2700)
    assert rule.hex == "380A1A8C"  # 3<<28 | 4<<25 | 5<<17 | 1<<12 | 2700
    assert decode_dst_rule("380A1A8C") == rule
    assert rule.transition(2024) == datetime(2024, 3, 15, 1, 45)
    assert rule.describe() == "3rd Friday of March at 01:45"


@pytest.mark.parametrize("text", ["360E2000", "360e2000", " 0x360E2000\n", "0X360e2000", "\t360E2000 "])
def test_decode_tolerates_case_whitespace_and_prefix(text):
    assert decode_dst_rule(text) == decode_dst_rule("360E2000")


@pytest.mark.parametrize("text", ["FFFFFFFF", "ffffffff", " 0xFFFFFFFF ", DST_DISABLED])
def test_all_ones_means_dst_disabled(text):
    assert decode_dst_rule(text) is None
    assert encode_dst_rule(None) == "FFFFFFFF"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "8 hexadecimal digits"),
        ("360E200", "8 hexadecimal digits"),
        ("360E20000", "8 hexadecimal digits"),
        ("360E 2000", "8 hexadecimal digits"),
        ("3_0E2000", "8 hexadecimal digits"),
        ("0x", "8 hexadecimal digits"),
        ("-60E2000", "8 hexadecimal digits"),
        ("GGGGGGGG", "8 hexadecimal digits"),
        ("３６０Ｅ２０００", "8 hexadecimal digits"),  # full-width digits: int(x, 16) would accept them
        ("00000000", "month=0"),
        ("D60E2000", "month=13"),
        ("F60E2000", "month=15"),
        ("36018000", "hour=24"),  # hour bits 12-16 = 24
        ("360E2E10", "seconds=3600"),
        ("300E2000", "needs a day of month"),  # operator 0 with day 0
        ("320E2000", "needs a day of month"),  # operator 1 with day 0
        ("36002000", "needs a day of week"),  # operator 3 with weekday 0
        ("41F02000", "day 31 of April"),
        ("21E02000", "day 30 of February"),
    ],
)
def test_garbage_raises_the_library_error_only(text, reason):
    with pytest.raises(LocalTimeError, match=reason) as caught:
        decode_dst_rule(text)
    assert isinstance(caught.value, EspiError)
    assert not isinstance(caught.value, ValueError)


def test_non_text_rule_is_refused():
    with pytest.raises(LocalTimeError):
        decode_dst_rule(0x360E2000)  # type: ignore[arg-type]


def test_invalid_field_values_are_refused_at_construction():
    with pytest.raises(LocalTimeError, match="month"):
        DstRule(month=0, operator=2, day_of_month=0, day_of_week=7, hour=2, seconds=0)
    with pytest.raises(LocalTimeError, match="hour"):
        DstRule(3, 2, 0, 7, True, 0)  # type: ignore[arg-type]
    with pytest.raises(LocalTimeError, match="32-bit"):
        DstRule.from_int(1 << 32)
    with pytest.raises(LocalTimeError, match="disabled"):
        DstRule.from_int(0xFFFFFFFF)


# -- transitions: every operator -----------------------------------------------------------------------------


def weekdays_of(year: int, month: int, weekday: int) -> list[date]:
    """Oracle: every date of ``month`` falling on ISO ``weekday`` (1 = Monday), by walking the calendar."""
    return [
        day
        for day in calendar.Calendar().itermonthdates(year, month)
        if day.month == month and day.isoweekday() == weekday
    ]


def test_occurrence_operators_match_a_calendar_walk():
    for year in (2000, 2023, 2024, 2025, 2100):
        for month in range(1, 13):
            for weekday in range(1, 8):
                days = weekdays_of(year, month, weekday)
                for operator in range(2, 8):
                    rule = DstRule(month, operator, 0, weekday, 0, 0)
                    if operator == 7:
                        expected = days[-1]
                    else:  # 5th occurrence in a month that has only four: the last one (documented decision)
                        expected = days[min(operator - 2, len(days) - 1)]
                    assert rule.transition(year).date() == expected, (rule, year)


def test_fifth_occurrence_falls_back_to_the_last():
    fifth_sunday = DstRule(month=2, operator=6, day_of_month=0, day_of_week=7, hour=2, seconds=0)
    assert fifth_sunday.transition(2025) == datetime(2025, 2, 23, 2)  # February 2025 has four Sundays
    assert fifth_sunday.transition(2026) == datetime(2026, 2, 22, 2)
    in_march = DstRule(month=3, operator=6, day_of_month=0, day_of_week=7, hour=2, seconds=0)
    assert in_march.transition(2024) == datetime(2024, 3, 31, 2)  # March 2024 has a real 5th Sunday


def test_on_day_of_month_and_leap_day():
    rule = DstRule(month=3, operator=0, day_of_month=30, day_of_week=0, hour=1, seconds=1800)
    assert rule.transition(2024) == datetime(2024, 3, 30, 1, 30)
    leap = DstRule(month=2, operator=0, day_of_month=29, day_of_week=0, hour=0, seconds=0)
    assert leap.transition(2024) == datetime(2024, 2, 29)
    assert leap.transition(2023) == datetime(2023, 2, 28)  # documented: 28 February in common years
    assert leap.transition(2100) == datetime(2100, 2, 28)


def test_weekday_on_or_after_day_of_month():
    # "Sunday on or after 8 March" is the 2nd Sunday of March: same day as 360E2000 in every year.
    on_or_after = DstRule(month=3, operator=1, day_of_month=8, day_of_week=7, hour=2, seconds=0)
    second_sunday = decode_dst_rule(US_START)
    for year in range(1990, 2040):
        assert on_or_after.transition(year) == second_sunday.transition(year)
    # It may run into the next month (and year), like zic's Sun>=29.
    late = DstRule(month=12, operator=1, day_of_month=30, day_of_week=7, hour=0, seconds=0)
    assert late.transition(2024) == datetime(2025, 1, 5)
    assert late.transition(2029) == datetime(2029, 12, 30)
    with pytest.raises(LocalTimeError, match="after 9999-12-31"):
        DstRule(month=12, operator=1, day_of_month=31, day_of_week=7, hour=0, seconds=0).transition(9999)


def test_transition_year_must_be_in_range():
    rule = decode_dst_rule(US_START)
    for year in (0, 10000, 2024.0):
        with pytest.raises(LocalTimeError, match="year"):
            rule.transition(year)  # type: ignore[arg-type]


def test_ignored_fields_are_kept_and_reported():
    rule = decode_dst_rule("65ED5A70")  # Enbridge's epoch value read as a bitmap
    assert (rule.month, rule.operator, rule.day_of_month, rule.day_of_week) == (6, 2, 30, 6)
    assert rule.ignored_fields == ("day_of_month",)
    assert rule.hex == "65ED5A70"
    on_day = DstRule(month=3, operator=0, day_of_month=10, day_of_week=3, hour=2, seconds=0)
    assert on_day.ignored_fields == ("day_of_week",)
    assert decode_dst_rule(US_START).ignored_fields == ()


# -- property tests ------------------------------------------------------------------------------------------

MAX_DAYS = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


@st.composite
def valid_rules(draw) -> DstRule:
    month = draw(st.integers(1, 12))
    operator = draw(st.integers(0, 7))
    if operator in (0, 1):
        day_of_month = draw(st.integers(1, MAX_DAYS[month]))
    else:
        day_of_month = draw(st.integers(0, 31))
    day_of_week = draw(st.integers(0 if operator == 0 else 1, 7))
    hour, seconds = draw(st.integers(0, 23)), draw(st.integers(0, 3599))
    return DstRule(month, operator, day_of_month, day_of_week, hour, seconds)


@given(valid_rules(), st.sampled_from([str.upper, str.lower, lambda s: f" 0x{s}\n"]))
def test_encode_decode_round_trip(rule, spelling):
    text = encode_dst_rule(rule)
    assert len(text) == 8 and text == text.upper()
    assert decode_dst_rule(spelling(text)) == rule


@given(st.integers(0, 0xFFFFFFFF))
@settings(max_examples=500)
def test_any_32_bit_value_decodes_or_raises_the_library_error(value):
    try:
        rule = decode_dst_rule(f"{value:08x}")
    except LocalTimeError:
        return
    if rule is None:
        assert value == 0xFFFFFFFF
        return
    assert rule.to_int() == value  # nothing is lost, ignored fields included
    for year in (1, 1999, 2024, 2100, 9998):
        assert rule.transition(year).month in (rule.month, rule.month % 12 + 1)


@given(st.text(max_size=20))
def test_any_text_decodes_or_raises_the_library_error(text):
    with contextlib.suppress(LocalTimeError):
        decode_dst_rule(text)


# -- LocalTimeParameters -------------------------------------------------------------------------------------


def test_parameters_from_element_any_namespace_and_padding():
    document = secure_parse(
        b"""<content xmlns="http://www.w3.org/2005/Atom" xmlns:espi="http://naesb.org/espi">
        <espi:LocalTimeParameters><espi:dstEndRule>B40E2000</espi:dstEndRule>
        <espi:dstOffset> 3600 </espi:dstOffset><espi:dstStartRule>
          360E2000 </espi:dstStartRule><espi:tzOffset>-18000</espi:tzOffset>
        </espi:LocalTimeParameters></content>"""
    )
    element = document.getroot()[0]
    assert LocalTimeParameters.from_element(element) == us(-18000)
    bare = secure_parse(
        b"<LocalTimeParameters><dstEndRule>FFFFFFFF</dstEndRule><dstOffset>0</dstOffset>"
        b"<dstStartRule>FFFFFFFF</dstStartRule><tzOffset>+3600</tzOffset></LocalTimeParameters>"
    ).getroot()
    assert LocalTimeParameters.from_element(bare) == LocalTimeParameters("FFFFFFFF", "FFFFFFFF", 0, 3600)


@pytest.mark.parametrize(
    ("xml", "reason"),
    [
        (b"<L><dstEndRule>B40E2000</dstEndRule><dstOffset>3600</dstOffset></L>", "lacks dstStartRule, tz"),
        (b"<L><dstEndRule/><dstStartRule/><dstOffset>3600.0</dstOffset><tzOffset>0</tzOffset></L>", "3600.0"),
        (b"<L><dstEndRule/><dstStartRule/><dstOffset>3_600</dstOffset><tzOffset>0</tzOffset></L>", "3_600"),
        (b"<L><dstEndRule/><dstStartRule/><dstOffset/><tzOffset>0</tzOffset></L>", "dstOffset"),
    ],
)
def test_parameters_from_element_refuses_bad_fields(xml, reason):
    with pytest.raises(LocalTimeError, match=reason):
        LocalTimeParameters.from_element(secure_parse(xml).getroot())


def test_parameters_type_checks():
    with pytest.raises(LocalTimeError):
        LocalTimeParameters(US_START, US_END, "3600", -18000)  # type: ignore[arg-type]
    with pytest.raises(LocalTimeError):
        LocalTimeParameters(US_START, None, 3600, -18000)  # type: ignore[arg-type]


# -- assess: sane parameters and every documented quirk ------------------------------------------------------


@pytest.mark.parametrize("tz_offset", [-18000, -21600, -25200, -28800, -32400, -12600])
def test_north_american_parameters_are_sane(tz_offset):
    verdict = assess(us(tz_offset))
    assert verdict.sane, verdict.problems
    assert verdict.warnings == ()
    assert verdict.summary == "sane"
    assert verdict.start_rule == decode_dst_rule(US_START)
    assert verdict.zone == LocalTimeZone(tz_offset, 3600, decode_dst_rule(US_START), decode_dst_rule(US_END))


def test_enbridge_epoch_in_hex_rules():
    verdict = assess(LocalTimeParameters("65ED5A70", "67271F70", 3600, -18000))
    assert not verdict.sane
    assert verdict.problems == (
        "dstStartRule 65ED5A70: rule looks like an epoch timestamp (2024-03-10T07:00:00Z)",
        # 0x67271F70 = 1730617200 = 07:00Z (02:00 EST); espi.md §1.6 prints 06:00Z, which is off by an hour.
        "dstEndRule 67271F70: rule looks like an epoch timestamp (2024-11-03T07:00:00Z)",
    )
    assert verdict.zone is None
    # The end value is not even a valid bitmap (seconds field 3952); the start value decodes to June garbage.
    with pytest.raises(LocalTimeError, match="seconds=3952"):
        decode_dst_rule("67271F70")


def test_epoch_detection_needs_a_suspicious_bitmap():
    # B40E2000 read as epoch seconds is 2065-09-23, inside 2000-2099: only odd-looking bitmaps are re-read.
    assert datetime.fromtimestamp(0xB40E2000, UTC).year == 2065
    assert assess(us(-18000)).sane
    # A suspicious bitmap that is not a quarter-hour epoch is reported as what it is.
    verdict = assess(LocalTimeParameters("65ED5A71", US_END, 3600, -18000))
    assert verdict.problems == (
        "dstStartRule 65ED5A71 sets day_of_month=30, which operator 2 ignores: not a rule",
    )


def test_wrong_sign_tz_offset_with_north_american_rules():
    verdict = assess(us(18000))  # NGMA-style gas files
    assert not verdict.sane
    assert verdict.problems == ("tzOffset +5 h with North American DST rules: probably the sign is wrong",)
    assert verdict.zone is not None  # still decodes, so a configured zone can be compared with it


def test_zero_tz_offset_with_north_american_rules_is_a_placeholder():
    verdict = assess(us(0))
    assert not verdict.sane
    assert verdict.problems == (
        "tzOffset 0 with North American DST rules: probably a placeholder (no UTC zone uses them)",
    )


def test_daylight_offset_as_tz_offset_is_flagged_but_usable():
    # The 2016 sandbox lists -14400 next to Eastern-zone data; with these rules it is also real Atlantic time.
    verdict = assess(us(-14400))
    assert verdict.sane
    assert len(verdict.warnings) == 1 and "America/Halifax" in verdict.warnings[0]
    assert verdict.summary.startswith("sane; tzOffset -4 h")


def test_dst_disabled():
    assert assess(LocalTimeParameters("FFFFFFFF", "ffffffff", 0, -25200)).summary == "sane"
    verdict = assess(LocalTimeParameters("FFFFFFFF", "FFFFFFFF", 3600, -36000))
    assert verdict.sane
    assert verdict.warnings == ("dstOffset 3600 s is ignored: both DST rules are FFFFFFFF (disabled)",)
    assert verdict.zone == LocalTimeZone(-36000)
    half = assess(LocalTimeParameters(US_START, "FFFFFFFF", 3600, -18000))
    assert not half.sane
    assert half.problems == ("only one DST rule is FFFFFFFF (disabled): DST has no start or no end",)


@pytest.mark.parametrize(
    ("ltp", "problem"),
    [
        (us(-54000), "tzOffset -54000 s (-15 h) is outside ±14 h"),
        (us(54000), "outside ±14 h"),
        (us(-18001), "tzOffset -18001 s is not a whole number of quarter hours"),
        (us(-300), "tzOffset -300 s is not a whole number of quarter hours (looks like minutes)"),
        (us(-18000, -3600), "dstOffset -3600 s is outside 0-2 h"),
        (us(-18000, 10800), "dstOffset 10800 s is outside 0-2 h"),
        (us(-18000, 1000), "dstOffset 1000 s is not a whole number of quarter hours"),
        (LocalTimeParameters(US_START, US_START, 3600, -18000), "are the same rule (2nd Sunday of March at"),
        (LocalTimeParameters("xyz", US_END, 3600, -18000), "dstStartRule: DST rule 'xyz' is not 8 hex"),
        (LocalTimeParameters(US_START, "C0000000", 3600, -18000), "dstEndRule C0000000: DST rule operator 0"),
        # DST from 10 March 02:00 to 10 March 12:00.
        (LocalTimeParameters("30A02000", "30A0C000", 3600, -18000), "DST would last less than a day in 2015"),
    ],
)
def test_insane_parameters(ltp, problem):
    verdict = assess(ltp)
    assert not verdict.sane
    assert any(problem in p for p in verdict.problems), verdict.problems
    assert problem in verdict.summary


def test_rules_with_zero_dst_offset_warn():
    verdict = assess(us(-18000, 0))
    assert verdict.sane
    assert verdict.warnings == ("DST rules are given but dstOffset is 0: no DST is applied",)


def test_other_rule_families():
    london = LocalTimeParameters("3E0E1000", "AE0E2000", 3600, 0)
    assert decode_dst_rule("3E0E1000").describe() == "last Sunday of March at 01:00"
    assert assess(london).summary == "sane"
    assert assess(LocalTimeParameters("3E0E1000", "AE0E2000", 3600, -18000)).warnings == (
        "tzOffset -5 h matches no zone that uses European DST rules",
    )
    assert assess(SYDNEY).summary == "sane"
    assert assess(LocalTimeParameters(SYDNEY.dst_start_rule, SYDNEY.dst_end_rule, 3600, -36000)).problems == (
        "tzOffset -10 h with south-east Australian DST rules: probably the sign is wrong",
    )


@given(
    st.one_of(st.integers(0, 0xFFFFFFFF).map("{:08X}".format), st.text(max_size=12)),
    st.one_of(st.integers(0, 0xFFFFFFFF).map("{:08X}".format), st.just(US_END)),
    st.integers(-100_000, 100_000),
    st.integers(-200_000, 200_000),
)
@settings(max_examples=300, deadline=None)
def test_assess_never_raises_and_sane_parameters_build_a_zone(start, end, dst_offset, tz_offset):
    ltp = LocalTimeParameters(start, end, dst_offset, tz_offset)
    verdict = assess(ltp)
    assert verdict.sane == (not verdict.problems)
    if verdict.sane:
        zone, note = zone_for(ltp, year=2024)
        assert isinstance(zone, LocalTimeZone), note
        assert LocalTimeZone.from_parameters(ltp) == zone


# -- LocalTimeZone against zoneinfo --------------------------------------------------------------------------

FIRST_HOUR = int(datetime(2007, 1, 1, tzinfo=UTC).timestamp())
LAST_HOUR = int(datetime(2031, 1, 1, tzinfo=UTC).timestamp())


def local_key(moment: datetime) -> tuple[int, ...]:
    return (moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second, moment.fold)


@functools.cache
def wall_hours(first: int) -> tuple[tuple[datetime, ...], tuple[datetime, ...]]:
    """Every naive wall hour from ``first`` (epoch seconds, read as a wall time) to 2031: fold 0, fold 1."""
    start = datetime.fromtimestamp(first, UTC).replace(tzinfo=None)
    walls = tuple(start + timedelta(hours=i) for i in range((LAST_HOUR - first) // 3600))
    return walls, tuple(wall.replace(fold=1) for wall in walls)


def assert_matches_zoneinfo(ltp: LocalTimeParameters, name: str, first: int = FIRST_HOUR) -> None:
    """Every UTC hour → local (wall time and fold) and every local wall hour, fold 0 and 1 → offset."""
    reference = require_zone(name)
    zone = LocalTimeZone.from_parameters(ltp)
    wrong = [
        datetime.fromtimestamp(ts, UTC)
        for ts in range(first, LAST_HOUR, 3600)
        if local_key(datetime.fromtimestamp(ts, zone)) != local_key(datetime.fromtimestamp(ts, reference))
    ]
    assert not wrong, f"UTC → local differs at {len(wrong)} hours, first {wrong[:3]}"
    for walls in wall_hours(first):
        wrong = [wall for wall in walls if zone.utcoffset(wall) != reference.utcoffset(wall)]
        assert not wrong, f"local → UTC differs at {len(wrong)} wall times, first {wrong[:3]}"


@pytest.mark.parametrize(
    ("tz_offset", "name"),
    [(-18000, "America/New_York"), (-21600, "America/Chicago"), (-28800, "America/Los_Angeles")],
)
def test_us_zones_hour_by_hour_2007_2030(tz_offset, name):
    assert_matches_zoneinfo(us(tz_offset), name)


def test_southern_hemisphere_sydney_hour_by_hour():
    # Sydney's current rules started in 2008 (April 2008 still ended DST on the old date).
    first = int(datetime(2008, 5, 1, tzinfo=UTC).timestamp())
    assert_matches_zoneinfo(SYDNEY, "Australia/Sydney", first=first)
    zone = LocalTimeZone.from_parameters(SYDNEY)
    assert datetime(2024, 1, 15, 12, tzinfo=zone).dst() == timedelta(hours=1)  # summer is DST
    assert datetime(2024, 7, 15, 12, tzinfo=zone).dst() == timedelta(0)


def test_reading_the_end_hour_as_standard_time_would_be_an_hour_late():
    """Documents the decision: B40E2000's hour 2 is 02:00 EDT (06:00Z), as in America/New_York."""
    zone = LocalTimeZone.from_parameters(us(-18000))
    assert zone.dst_period(2024) == (
        datetime(2024, 3, 10, 7, tzinfo=UTC),
        datetime(2024, 11, 3, 6, tzinfo=UTC),
    )
    between = datetime(2024, 11, 3, 6, 30, tzinfo=UTC)
    assert between.astimezone(zone).utcoffset() == timedelta(hours=-5)


@pytest.mark.parametrize(
    ("day", "hours"), [(date(2024, 3, 10), 23), (date(2024, 11, 3), 25), (date(2024, 7, 4), 24)]
)
def test_local_day_lengths(day, hours):
    for zone in (LocalTimeZone.from_parameters(us(-18000)), require_zone("America/New_York")):
        start = datetime(day.year, day.month, day.day, tzinfo=zone)
        end = start + timedelta(days=1)  # same wall time next day
        # Aware datetimes sharing a tzinfo subtract as wall times; convert to UTC to count real hours.
        assert end.astimezone(UTC) - start.astimezone(UTC) == timedelta(hours=hours), zone


def test_fold_semantics_of_the_repeated_and_skipped_hours():
    zone = LocalTimeZone.from_parameters(us(-18000))
    repeated = datetime(2024, 11, 3, 1, 30, tzinfo=zone)
    assert repeated.utcoffset() == timedelta(hours=-4)
    assert repeated.tzname() == "UTC-04:00"
    assert repeated.dst() == timedelta(hours=1)
    assert repeated.replace(fold=1).utcoffset() == timedelta(hours=-5)
    assert repeated.replace(fold=1).tzname() == "UTC-05:00"
    assert repeated.astimezone(UTC) == datetime(2024, 11, 3, 5, 30, tzinfo=UTC)
    assert repeated.replace(fold=1).astimezone(UTC) == datetime(2024, 11, 3, 6, 30, tzinfo=UTC)
    second_pass = datetime(2024, 11, 3, 6, 30, tzinfo=UTC).astimezone(zone)
    assert (second_pass.hour, second_pass.minute, second_pass.fold) == (1, 30, 1)
    first_pass = datetime(2024, 11, 3, 5, 30, tzinfo=UTC).astimezone(zone)
    assert (first_pass.hour, first_pass.fold) == (1, 0)
    skipped = datetime(2024, 3, 10, 2, 30, tzinfo=zone)
    assert skipped.utcoffset() == timedelta(hours=-5)  # fold=0: the offset before the gap
    assert skipped.replace(fold=1).utcoffset() == timedelta(hours=-4)


def test_second_by_second_around_transitions():
    zone = LocalTimeZone.from_parameters(us(-21600))
    reference = require_zone("America/Chicago")
    for year in (2007, 2019, 2024, 2030):
        for edge in zone.dst_period(year):
            for delta in range(-2, 3):
                moment = edge + timedelta(seconds=delta)
                assert local_key(moment.astimezone(zone)) == local_key(moment.astimezone(reference)), moment
                wall = moment.astimezone(reference).replace(tzinfo=None)
                for folded in (wall, wall.replace(fold=1)):
                    assert zone.utcoffset(folded) == reference.utcoffset(folded), folded


@st.composite
def zones(draw) -> LocalTimeZone:
    start, end = draw(valid_rules()), draw(valid_rules())
    assume(start != end)
    tz_offset = draw(st.integers(-56, 56)) * 900
    return LocalTimeZone(tz_offset, draw(st.integers(1, 8)) * 900, start, end)


@given(zones(), st.integers(-2_000_000_000, 4_000_000_000))
@settings(max_examples=200, deadline=None)
def test_utc_local_utc_round_trip_for_any_rules(zone, stamp):
    moment = datetime.fromtimestamp(stamp, UTC)
    local = moment.astimezone(zone)
    assert local.astimezone(UTC) == moment
    offsets = (timedelta(seconds=zone.tz_offset), timedelta(seconds=zone.tz_offset + zone.dst_offset))
    assert local.utcoffset() in offsets
    wall = local.replace(tzinfo=None)
    assert zone.utcoffset(wall) in offsets
    assert zone.utcoffset(wall.replace(fold=1)) in offsets


def test_fixed_offset_zone():
    zone = LocalTimeZone.from_parameters(LocalTimeParameters("FFFFFFFF", "FFFFFFFF", 0, -25200))
    assert not zone.has_dst
    assert zone.utcoffset(None) == timedelta(hours=-7)
    for month in (1, 7):
        moment = datetime(2024, month, 1, tzinfo=zone)
        assert (moment.utcoffset(), moment.dst()) == (timedelta(hours=-7), timedelta(0))
        assert moment.tzname() == "UTC-07:00"
    phoenix = require_zone("America/Phoenix")
    for ts in range(FIRST_HOUR, LAST_HOUR, 86400 - 3600):  # every day, at a different hour each day
        assert local_key(datetime.fromtimestamp(ts, zone)) == local_key(datetime.fromtimestamp(ts, phoenix))


def test_zone_value_semantics_and_pickling():
    zone = LocalTimeZone.from_parameters(us(-18000))
    same = LocalTimeZone.from_parameters(LocalTimeParameters("0x360e2000", "b40e2000", 3600, -18000))
    assert zone == same and hash(zone) == hash(same)
    assert zone != LocalTimeZone.from_parameters(us(-21600))
    assert LocalTimeZone(-18000, 3600) == LocalTimeZone(-18000)  # no rules: DST offset is moot
    copy = pickle.loads(pickle.dumps(datetime(2024, 11, 3, 1, 30, fold=1, tzinfo=zone)))
    assert copy.tzinfo == zone and copy.utcoffset() == timedelta(hours=-5)
    assert repr(zone) == "LocalTimeZone(tz_offset=-18000, dst_offset=3600, start='360E2000', end='B40E2000')"
    assert str(zone) == (
        "UTC-05:00, DST +1 h from the 2nd Sunday of March at 02:00 to the 1st Sunday of November at 02:00"
    )
    assert zone.utcoffset(None) is None
    assert LocalTimeZone(-18000).dst_period(2024) is None


def test_zone_extremes_and_protocol_errors():
    zone = LocalTimeZone.from_parameters(us(-18000))
    assert datetime.min.replace(tzinfo=zone).utcoffset() == timedelta(hours=-5)
    assert datetime.max.replace(tzinfo=zone).utcoffset() == timedelta(hours=-5)
    with pytest.raises(ValueError, match="not self"):
        zone.fromutc(datetime(2024, 1, 1, tzinfo=timezone(timedelta(0))))
    with pytest.raises(LocalTimeError, match="both a start and an end"):
        LocalTimeZone(-18000, 3600, decode_dst_rule(US_START), None)
    with pytest.raises(LocalTimeError, match="24 h"):
        LocalTimeZone(86400)
    with pytest.raises(LocalTimeError, match="not 8 hexadecimal"):
        LocalTimeZone.from_parameters(LocalTimeParameters("nope", US_END, 3600, -18000))


# -- zone choice and IANA candidates -------------------------------------------------------------------------


def test_configured_zone_wins_and_is_cross_checked():
    require_zone("America/New_York")
    zone, note = zone_for(us(-18000), "America/New_York", year=2024)
    assert zone == ZoneInfo("America/New_York")
    assert note == "configured zone America/New_York; LocalTimeParameters agree with it in 2024"
    zone, note = zone_for(us(-21600), " America/New_York ", year=2024)
    assert zone == ZoneInfo("America/New_York")
    assert note == (
        "configured zone America/New_York; LocalTimeParameters disagree in 2024: at 2024-01-15T12:00:00Z "
        "the zone says UTC-05:00, LocalTimeParameters say UTC-06:00"
    )


def test_cross_check_catches_a_transition_an_hour_off():
    require_zone("America/New_York")
    late_end = LocalTimeParameters(US_START, "B40E3000", 3600, -18000)  # DST ends 03:00 instead of 02:00
    _, note = zone_for(late_end, "America/New_York", year=2024)
    assert "disagree in 2024: at 2024-11-03T06:59:59Z the zone says UTC-05:00" in note


def test_configured_zone_with_broken_or_missing_parameters():
    require_zone("America/Toronto")
    enbridge = LocalTimeParameters("65ED5A70", "67271F70", 3600, -18000)
    zone, note = zone_for(enbridge, "America/Toronto", year=2024)
    assert zone == ZoneInfo("America/Toronto")
    assert note.startswith("configured zone America/Toronto; LocalTimeParameters are no zone: dstStartRule")
    zone, note = zone_for(us(18000), "America/Toronto", year=2024)
    assert zone == ZoneInfo("America/Toronto")
    assert "disagree in 2024" in note and "probably the sign is wrong" in note
    _, note = zone_for(None, "America/Toronto")
    assert note == "configured zone America/Toronto; no LocalTimeParameters to cross-check"


@pytest.mark.parametrize("name", ["Nowhere/City", "America", "/etc/passwd", "../etc/x", "", "  ", "a" * 5000])
def test_unknown_configured_zone_is_an_error(name):
    with pytest.raises(LocalTimeError, match="time zone"):
        zone_for(us(-18000), name)


def test_without_configured_zone_sane_parameters_are_used():
    require_zone("America/New_York")
    zone, note = zone_for(us(-18000))
    assert zone == LocalTimeZone.from_parameters(us(-18000))
    assert note.startswith("no configured zone: using LocalTimeParameters UTC-05:00, DST +1 h")
    assert note.endswith("; matches America/New_York, America/Toronto")
    zone, note = zone_for(us(-14400))
    assert isinstance(zone, LocalTimeZone)
    assert "matches America/Halifax (tzOffset -4 h" in note


def test_without_configured_zone_insane_parameters_fall_back_to_utc():
    zone, note = zone_for(us(18000))
    assert zone is UTC
    assert note == (
        "no configured zone and LocalTimeParameters are unusable (tzOffset +5 h with North American DST "
        "rules: probably the sign is wrong): using UTC"
    )
    assert zone_for(None) == (UTC, "no configured zone and no LocalTimeParameters: using UTC")
    with pytest.raises(LocalTimeError, match="year"):
        zone_for(us(-18000), "UTC", year=1066)


@pytest.mark.parametrize(
    ("ltp", "expected"),
    [
        (us(-18000), ("America/New_York", "America/Toronto")),
        (us(-21600), ("America/Chicago", "America/Winnipeg")),
        (us(-25200), ("America/Denver", "America/Edmonton")),
        (us(-28800), ("America/Los_Angeles", "America/Vancouver")),
        (us(-32400), ("America/Anchorage",)),
        (us(-14400), ("America/Halifax",)),
        # Newfoundland changed at 00:01 until 2011, so no exact match over 2007-2030.
        (us(-12600), ()),
        (LocalTimeParameters("FFFFFFFF", "FFFFFFFF", 0, -25200), ("America/Phoenix",)),
        (LocalTimeParameters("FFFFFFFF", "FFFFFFFF", 0, -36000), ("Pacific/Honolulu",)),
        # European rules change at 01:00 UTC: 01:00 GMT → 02:00 BST, 02:00 CET → 03:00 CEST.
        (LocalTimeParameters("3E0E1000", "AE0E2000", 3600, 0), ("Europe/London",)),
        (LocalTimeParameters("3E0E2000", "AE0E3000", 3600, 3600), ("Europe/Paris",)),
        (us(18000), ()),
        (LocalTimeParameters("65ED5A70", "67271F70", 3600, -18000), ()),
    ],
)
def test_iana_candidates(ltp, expected):
    for name in expected:
        require_zone(name)
    assert iana_candidates(ltp) == expected


def test_iana_candidates_southern_hemisphere():
    require_zone("Australia/Sydney")
    # Sydney's 2007-2008 season ended in late March under the old rules: no exact 2007-2030 match...
    assert iana_candidates(SYDNEY) == ()
    assert "Australia/Sydney" in CANDIDATE_ZONES
    # ...but the rules are exact hour by hour from mid-2008 (test_southern_hemisphere_sydney_hour_by_hour).


# -- the public samples --------------------------------------------------------------------------------------

# Verdict per distinct LocalTimeParameters in ../shared/espi/samples: (sane, text in summary, candidate).
SAMPLE_VERDICTS = {
    us(-18000): (True, "sane", "America/New_York"),
    us(-21600): (True, "sane", "America/Chicago"),
    us(-28800): (True, "sane", "America/Los_Angeles"),
    us(-14400): (True, "America/Halifax", "America/Halifax"),
    us(18000): (False, "probably the sign is wrong", None),
    us(0): (False, "probably a placeholder", None),
}


@pytest.mark.samples
def test_sample_local_time_parameters():
    files = sample_files()
    if not files:
        pytest.skip("shared samples not available")
    found: dict[LocalTimeParameters, list[str]] = {}
    for path in files:
        for element in secure_parse(path).iter("{*}LocalTimeParameters"):
            found.setdefault(LocalTimeParameters.from_element(element), []).append(path.name)
    assert found, "no LocalTimeParameters in the samples"
    unknown = {ltp: names for ltp, names in found.items() if ltp not in SAMPLE_VERDICTS}
    assert not unknown, f"new LocalTimeParameters in the samples, add a verdict: {unknown}"
    for ltp in found:
        sane, text, candidate = SAMPLE_VERDICTS[ltp]
        verdict = assess(ltp)
        assert verdict.sane is sane, (ltp, verdict.summary)
        assert text in verdict.summary, (ltp, verdict.summary)
        if candidate is not None:
            require_zone(candidate)
            assert candidate in iana_candidates(ltp)


# -- the feed's own clues when the parameters cannot be used (docs/mapping.md §3) ----------------------------------

JULY = datetime(2024, 7, 2, 14, 0, tzinfo=UTC)
JANUARY = datetime(2024, 1, 15, 17, 0, tzinfo=UTC)


def test_assess_keeps_the_tz_offset_problems_apart():
    verdict = assess(us(0))
    assert verdict.tz_offset_problems == verdict.problems == (
        "tzOffset 0 with North American DST rules: probably a placeholder (no UTC zone uses them)",)
    assert verdict.dst_problems == ()
    enbridge = assess(LocalTimeParameters("65ED5A70", "67271F70", 3600, -18000))
    assert enbridge.tz_offset_problems == () and len(enbridge.dst_problems) == 2
    both = assess(LocalTimeParameters("65ED5A70", US_END, 3600, 50_000))
    assert both.tz_offset_problems == ("tzOffset 50000 s is not a whole number of quarter hours",)
    assert both.dst_problems and set(both.problems) == set(both.tz_offset_problems + both.dst_problems)


@pytest.mark.parametrize(("instant", "stated"), [(JULY, -14400), (JANUARY, -18000)])
def test_a_broken_tz_offset_is_repaired_from_a_stated_offset(instant, stated):
    require_zone("America/New_York")
    for broken in (0, 18000):  # a placeholder and a flipped sign
        zone, note = zone_for(us(broken), stated_offset=(stated, instant), year=2024)
        assert zone == LocalTimeZone.from_parameters(us(-18000)), note
        assert "when tzOffset is -18000: using UTC-05:00, DST +1 h" in note
        assert note.endswith("; matches America/New_York, America/Toronto")


def test_the_repair_fits_the_stated_offset_else_it_is_used_fixed():
    """-05:00 stated in July cannot be Eastern time (EDT is -04:00); -06:00 standard is Central, whose DST would
    give -05:00 in July: the repair finds Central time."""
    zone, note = zone_for(us(0), stated_offset=(-18000, JULY), year=2024)
    assert zone == LocalTimeZone.from_parameters(us(-21600)), note
    # an offset no sane tzOffset explains (-03:10, not whole quarter hours): a fixed offset, and the note says why
    zone, note = zone_for(us(0), stated_offset=(-11400, JULY), year=2024)
    assert zone == LocalTimeZone(-11400)
    assert note.endswith("using UTC-03:10, stated by the feed's timestamps (at 2024-07-02T14:00:00Z), as a fixed "
                         "offset (no DST)")


def test_unusable_dst_rules_leave_the_tz_offset():
    enbridge = LocalTimeParameters("65ED5A70", "67271F70", 3600, -18000)
    zone, note = zone_for(enbridge, year=2024, stated_offset=(-14400, JULY))
    assert zone == LocalTimeZone(-18000)  # the parameters' own tzOffset beats the timestamps
    assert note.endswith("using their tzOffset, UTC-05:00 fixed (no DST)")
    one_sided = LocalTimeParameters(US_START, DST_DISABLED, 3600, -25200)
    assert zone_for(one_sided, year=2024)[0] == LocalTimeZone(-25200)
    bad_dst = LocalTimeParameters(US_START, US_END, 9000, -18000)
    assert zone_for(bad_dst, year=2024)[0] == LocalTimeZone(-18000)


def test_without_parameters_a_stated_offset_beats_utc():
    zone, note = zone_for(None, stated_offset=(-28800, JANUARY))
    assert zone == LocalTimeZone(-28800)
    assert note == ("no configured zone and no LocalTimeParameters: using UTC-08:00, stated by the feed's timestamps "
                    "(at 2024-01-15T17:00:00Z), as a fixed offset (no DST)")
    assert zone_for(None) == (UTC, "no configured zone and no LocalTimeParameters: using UTC")


def test_clues_never_override_sane_parameters_or_a_configured_zone():
    require_zone("America/Chicago")
    zone, _note = zone_for(us(-18000), stated_offset=(-28800, JULY))
    assert zone == LocalTimeZone.from_parameters(us(-18000))
    zone, _note = zone_for(us(0), "America/Chicago", stated_offset=(-14400, JULY), year=2024)
    assert zone == ZoneInfo("America/Chicago")


def test_stated_offsets_of_atom_dates():
    from espi.atom import FeedReader
    from espi.model import stated_utc_offset

    assert [stated_utc_offset(text) for text in ("2024-07-01T10:00:00-08:00", " 2024-07-01T10:00:00+05:30 ",
                                                 "2024-07-01T10:00:00Z", "2024-07-01T10:00:00-00:00",
                                                 "2024-07-01T10:00:00+00:00", "2024-07-01T10:00:00", "2024-07-01",
                                                 "yesterday", None)] == [
        -28800, 19800, None, None, 0, None, None, None, None]
    feed = (b'<feed xmlns="http://www.w3.org/2005/Atom"><updated>2024-07-01T10:00:00-07:00</updated>'
            b"<entry><updated>2024-07-02T10:00:00-08:00</updated><published>2024-07-01T10:00:00Z</published></entry>"
            b"<entry><updated>2024-07-03T10:00:00-08:00</updated></entry></feed>")
    reader = FeedReader(feed)
    for _item in reader:
        pass
    assert reader.stated_offset() == (-28800, datetime(2024, 7, 2, 18, 0, tzinfo=UTC))  # the most common one
