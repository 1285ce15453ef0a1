"""Legacy ESPI scope strings (espi/scope.py), the Function Block catalogue and ``greenbridge scope``.

The example strings are the real ones collected in espi.md §5.1, §6.1-6.4, §3.9 and §10.2 and in the shared
sample files; the property tests check the parser's contract on generated input: it round-trips canonical
scopes, and whatever it is given it either returns a Scope or raises ScopeError.
"""

from __future__ import annotations

import contextlib
import io
import json
import pickle
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from espi.errors import EspiError
from espi.function_blocks import (
    FUNCTION_BLOCKS,
    RETAIL_CUSTOMER_RANGE,
    Certification,
    function_block,
    numbering_note,
)
from espi.scope import (
    HISTORY_MONTHS_BELOW,
    KNOWN_KEYS,
    LEGACY_SCOPES,
    MAX_NUMBER,
    MAX_SCOPE_TEXT,
    NAMED_FREQUENCIES,
    SECONDS_PER_MONTH,
    Scope,
    ScopeError,
    format_scope,
    parse_scope,
    parse_scopes,
    scope_from_json,
    scope_to_json,
)
from greenbridge.cli import main

# ------------------------------------------------------------------------------------------------------------
# Real-world examples

#: Scopes already in canonical form: parse → format gives them back unchanged.
CANONICAL_REAL_SCOPES = [
    # GBA contract token-response-subscription.json; CMD harness test scope
    "FB=4_5_15;IntervalDuration=3600;BlockDuration=monthly;HistoryLength=13",
    # OpenESPI seed data, access_token of client third_party
    "FB=1_3_4_5_13_14_39;IntervalDuration=3600;BlockDuration=monthly;HistoryLength=13",
    # retail-customer FBs in sample ApplicationInformation
    "FB=1_3_4_5_13_15_16_28_31_37_39_51_53_54_55_56_57_58_59_60_61_64_65_69",
    # client_credentials scopes: client_access_token, registration_access_token, upload, DC admin
    "FB=34_35",
    "FB=36_40",
    "FB=45",
    "FB=3_19_32_33_34_35_36_37_38_41_44_45",
    # GBA contract token-response-bulk.json
    "FB=1_3_4_5_10_11_35;BlockDuration=daily;BR=1",
    # UtilityAPI certDataScopeFBs (harness configuration)
    "FB=1_3_4_5_6_7_8_9_13_14_15_16_17_27_28_35_37_39_40",
    # sample files
    "FB=1_3_4_5",
    "FB=1_3_4_5_13_15",
    "FB=1_3_4_5_13_14_15_39;IntervalDuration=900;BlockDuration=monthly;HistoryLength=13",
    "FB=1_3_4_5_13_14_19_32_33_34_35_36_37_38_41_44_45",
    "FB=1_2_4_5_12_15_16;IntervalDuration=3600;BlockDuration=monthly;HistoryLength=13",
    # OpenESPI authorization server (2025)
    "FB=4_5_16;IntervalDuration=900;BlockDuration=daily;HistoryLength=7",
    "FB=4_5_17;IntervalDuration=86400;BlockDuration=yearly;HistoryLength=1",
    # the literal legacy scopes
    *LEGACY_SCOPES,
]

XSD_APPLICATION_INFORMATION_EXAMPLE = (
    "FB=1_3_4_5_8_13_18_19_31_34_35_39;IntervalDuration=900_3600;BlockDuration=Daily; "
    "HistoryLength= 34128000;SubscriptionFrequency=Daily"
)


@pytest.mark.parametrize("text", CANONICAL_REAL_SCOPES)
def test_real_canonical_scopes_format_back_unchanged(text):
    assert format_scope(parse_scope(text)) == text


def test_xsd_application_information_example():
    scope = parse_scope(XSD_APPLICATION_INFORMATION_EXAMPLE)
    assert scope == Scope(
        function_blocks=(1, 3, 4, 5, 8, 13, 18, 19, 31, 34, 35, 39),
        interval_durations=(900, 3600),
        block_durations=("daily",),
        history_length=34128000,
        subscription_frequency="daily",
    )
    assert format_scope(scope) == (
        "FB=1_3_4_5_8_13_18_19_31_34_35_39;IntervalDuration=900_3600;BlockDuration=daily;"
        "HistoryLength=34128000;SubscriptionFrequency=daily"
    )


def test_token_response_scope_fields():
    scope = parse_scope("FB=4_5_15;IntervalDuration=3600;BlockDuration=monthly;HistoryLength=13")
    assert scope.function_blocks == (4, 5, 15)
    assert scope.interval_durations == (3600,)
    assert scope.block_durations == ("monthly",)
    assert scope.history_length == 13
    assert scope.subscription_frequency is None
    assert scope.bulk_ids == ()
    assert not scope.is_legacy and not scope.is_empty


def test_bulk_token_scope_has_bulk_id():
    scope = parse_scope("FB=1_3_4_5_10_11_35;BlockDuration=daily;BR=1")
    assert scope.function_blocks == (1, 3, 4, 5, 10, 11, 35)
    assert scope.block_durations == ("daily",)
    assert scope.bulk_ids == ("1",)


def test_retail_customer_scope_keeps_every_block():
    scope = parse_scope("FB=1_3_4_5_13_15_16_28_31_37_39_51_53_54_55_56_57_58_59_60_61_64_65_69")
    assert [n for n in scope.function_blocks if n in RETAIL_CUSTOMER_RANGE] == [
        51, 53, 54, 55, 56, 57, 58, 59, 60, 61, 64, 65, 69
    ]  # fmt: skip


def test_hydro_one_lower_case_history_length():
    scope = parse_scope("historyLength=32148000")
    assert scope == Scope(history_length=32148000)
    assert format_scope(scope) == "HistoryLength=32148000"


def test_unsorted_sample_scope_is_sorted_canonically():
    text = (
        "FB=1_3_4_5_6_7_8_9_10_11_29_12_13_14_15_16_17_18_19_27_28_32_33_34_35_37_38_39_40_41_44;"
        "IntervalDuration=3600;BlockDuration=monthly;HistoryLength=13"
    )
    scope = parse_scope(text)
    assert scope.function_blocks == tuple(sorted(scope.function_blocks))
    assert format_scope(scope) == (
        "FB=1_3_4_5_6_7_8_9_10_11_12_13_14_15_16_17_18_19_27_28_29_32_33_34_35_37_38_39_40_41_44;"
        "IntervalDuration=3600;BlockDuration=monthly;HistoryLength=13"
    )


@pytest.mark.parametrize(
    ("text", "field", "expected"),
    [
        ("IntervalDuration=900", "interval_durations", (900,)),
        ("IntervalDuration=86400", "interval_durations", (86400,)),
        ("IntervalDuration=2592000", "interval_durations", (2592000,)),
        ("IntervalDuration=900_3600_86400", "interval_durations", (900, 3600, 86400)),
        ("IntervalDuration=3600_900", "interval_durations", (900, 3600)),
        ("BlockDuration=weekly", "block_durations", ("weekly",)),
        ("BlockDuration=yearly", "block_durations", ("yearly",)),
        ("BlockDuration=BillingPeriod", "block_durations", ("billingPeriod",)),
        ("BlockDuration=SEASONAL_Daily_86400", "block_durations", (86400, "daily", "seasonal")),
        ("HistoryLength=94608000", "history_length", 94608000),
        ("HistoryLength=24", "history_length", 24),
        ("SubscriptionFrequency=Daily", "subscription_frequency", "daily"),
        ("SubscriptionFrequency=3600", "subscription_frequency", 3600),
        ("AccountCollection=5", "account_collection", 5),
        ("BR=BULK_1", "bulk_ids", ("BULK_1",)),
        ("BR=S-119506;BR=a.b~c", "bulk_ids", ("S-119506", "a.b~c")),
    ],
)
def test_value_terms(text, field, expected):
    assert getattr(parse_scope(text), field) == expected


@pytest.mark.parametrize("literal", LEGACY_SCOPES)
def test_legacy_literals(literal):
    scope = parse_scope(literal)
    assert scope.legacy_name == literal
    assert scope.is_legacy
    assert scope.function_blocks == ()
    assert format_scope(scope) == literal


@pytest.mark.parametrize(
    "text", ["thirdparty_admin_access", " ThirdParty_Admin_Access ;", "THIRDPARTY_ADMIN_ACCESS;;"]
)
def test_legacy_literals_are_tolerated_in_any_case_and_with_terminator(text):
    assert parse_scope(text) == Scope(legacy_name="ThirdParty_Admin_Access")


def test_authorization_xsd_example_with_typo_is_rejected_at_the_fb_term():
    # espi.xsd's Authorization.scope example runs "19" and "37" together.
    text = "FB=1_3_4_5_13_14_15_1937_39;IntervalDuration=3600;BlockDuration=monthly;HistoryLength=94608000"
    with pytest.raises(ScopeError) as caught:
        parse_scope(text)
    assert caught.value.position == 0
    assert caught.value.term == "FB=1_3_4_5_13_14_15_1937_39"
    assert "1937" in str(caught.value)


# ------------------------------------------------------------------------------------------------------------
# Tolerance (espi.md §5.1 "defensive parsing")


@pytest.mark.parametrize(
    "text",
    [
        "FB=4_5_15;IntervalDuration=3600;BlockDuration=monthly;HistoryLength=13;",
        "FB=4_5_15; IntervalDuration=3600; BlockDuration=monthly; HistoryLength=13",
        "  FB = 4_5_15 ;IntervalDuration= 3600;  BlockDuration =Monthly ;HistoryLength= 13 ;; ",
        "fb=4_5_15;intervalduration=3600;BLOCKDURATION=MONTHLY;historyLength=13",
        "HistoryLength=13;BlockDuration=monthly;IntervalDuration=3600;FB=15_5_4",
        "FB=4_5;FB=15_4;IntervalDuration=3600;IntervalDuration=3600;BlockDuration=monthly;HistoryLength=13",
        "FB=04_005_15;IntervalDuration=03600;BlockDuration=monthly;HistoryLength=013",
        "FB=4__5_15_;IntervalDuration=_3600;BlockDuration=monthly;HistoryLength=13;HistoryLength=13",
        "FB=4_ 5 _15;IntervalDuration=3600;BlockDuration=monthly;HistoryLength=13\n",
    ],
)
def test_tolerated_spellings_of_the_token_response_scope(text):
    assert (
        format_scope(parse_scope(text))
        == "FB=4_5_15;IntervalDuration=3600;BlockDuration=monthly;HistoryLength=13"
    )


def test_unknown_terms_are_kept_verbatim_in_order():
    scope = parse_scope("Zeta=1;FB=4;Alpha= a b=c ;zeta=2;Zeta=1;Empty=")
    assert scope.unknown_terms == (("Zeta", "1"), ("Alpha", "a b=c"), ("zeta", "2"), ("Empty", ""))
    assert format_scope(scope) == "FB=4;Zeta=1;Alpha=a b=c;zeta=2;Empty="


@pytest.mark.parametrize("text", ["", "   ", ";", " ; ;; \n"])
def test_blank_text_is_the_empty_scope(text):
    scope = parse_scope(text)
    assert scope == Scope()
    assert scope.is_empty
    assert format_scope(scope) == ""


def test_terminated_form_follows_the_ebnf():
    scope = parse_scope("FB=1_3_4_5_13_14_39;IntervalDuration=3600;BlockDuration=monthly;HistoryLength=13")
    terminated = format_scope(scope, terminated=True)
    assert terminated == "FB=1_3_4_5_13_14_39;IntervalDuration=3600;BlockDuration=monthly;HistoryLength=13;"
    assert parse_scope(terminated) == scope
    assert (
        format_scope(Scope(legacy_name="ThirdParty_Admin_Access"), terminated=True)
        == "ThirdParty_Admin_Access"
    )


def test_format_orders_terms_and_writes_one_br_term_per_bulk_id():
    scope = Scope(
        unknown_terms=(("X", "1"),),
        bulk_ids=("b", "a"),
        account_collection=5,
        subscription_frequency="weekly",
        history_length=13,
        block_durations=("monthly", "daily"),
        interval_durations=(3600, 900),
        function_blocks=(35, 4),
    )
    assert format_scope(scope) == (
        "FB=4_35;IntervalDuration=900_3600;BlockDuration=daily_monthly;HistoryLength=13;"
        "SubscriptionFrequency=weekly;AccountCollection=5;BR=a;BR=b;X=1"
    )
    assert str(scope) == format_scope(scope)


# ------------------------------------------------------------------------------------------------------------
# Several scopes in one string


def test_xsd_example_with_blanks_after_semicolons_is_one_scope():
    assert parse_scopes(XSD_APPLICATION_INFORMATION_EXAMPLE) == [
        parse_scope(XSD_APPLICATION_INFORMATION_EXAMPLE)
    ]


def test_space_separated_list():
    text = (
        "FB=4_5_15;IntervalDuration=3600;BlockDuration=monthly;HistoryLength=13 "
        "FB=4_5_16;IntervalDuration=900;BlockDuration=daily;HistoryLength=7"
    )
    assert [format_scope(s) for s in parse_scopes(text)] == [
        "FB=4_5_15;IntervalDuration=3600;BlockDuration=monthly;HistoryLength=13",
        "FB=4_5_16;IntervalDuration=900;BlockDuration=daily;HistoryLength=7",
    ]


def test_comma_separated_list_and_ebnf_terminated_scopes():
    text = " FB=4_5;HistoryLength=13; FB=34_35,FB=36_40 ,\n fb=45;,"
    assert [format_scope(s) for s in parse_scopes(text)] == [
        "FB=4_5;HistoryLength=13",
        "FB=34_35",
        "FB=36_40",
        "FB=45",
    ]


def test_legacy_literals_in_a_list():
    text = "ThirdParty_Admin_Access DataCustodian_Admin_Access, FB=34_35 upload_admin_access"
    assert parse_scopes(text) == [
        Scope(legacy_name="ThirdParty_Admin_Access"),
        Scope(legacy_name="DataCustodian_Admin_Access"),
        Scope(function_blocks=(34, 35)),
        Scope(legacy_name="Upload_Admin_Access"),
    ]


def test_fb_terms_without_blank_between_them_merge():
    assert parse_scopes("FB=1;FB=4") == [Scope(function_blocks=(1, 4))]
    assert parse_scopes("FB=1; FB=4") == [Scope(function_blocks=(1,)), Scope(function_blocks=(4,))]


def test_only_a_whole_legacy_literal_starts_a_new_scope():
    # "ThirdParty_Admin_Accessory" merely begins like a literal, so the blank before it separates nothing.
    assert parse_scopes("FB=4;Note=see ThirdParty_Admin_Accessory") == [
        Scope(function_blocks=(4,), unknown_terms=(("Note", "see ThirdParty_Admin_Accessory"),))
    ]
    assert len(parse_scopes("FB=4 ThirdParty_Admin_Access;")) == 2


def test_scope_without_fb_may_lead_a_list():
    assert parse_scopes("BR=1 FB=4") == [Scope(bulk_ids=("1",)), Scope(function_blocks=(4,))]


@pytest.mark.parametrize("text", ["", "  ", ", ,", " ; , ;"])
def test_blank_list_is_empty(text):
    assert parse_scopes(text) == []


def test_error_positions_in_a_list_count_from_the_start_of_the_text():
    text = "FB=4_5 FB=34_35;HistoryLength=x"
    with pytest.raises(ScopeError) as caught:
        parse_scopes(text)
    assert caught.value.position == text.index("HistoryLength")
    assert caught.value.term == "HistoryLength=x"
    assert caught.value.index == 2


def test_parse_scope_hints_at_parse_scopes_for_a_list():
    with pytest.raises(ScopeError, match="parse_scopes"):
        parse_scope("FB=4_5_15 FB=34_35")


# ------------------------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize(
    ("text", "position", "term", "reason"),
    [
        ("FB=4_x_5", 0, "FB=4_x_5", "whole number, got 'x'"),
        ("FB=4;IntervalDuration=abc", 5, "IntervalDuration=abc", "interval duration must be a whole number"),
        ("FB=", 0, "FB=", "Function Block list is empty"),
        ("FB=_", 0, "FB=_", "Function Block list is empty"),
        ("FB=0", 0, "FB=0", "out of range 1..99"),
        ("FB=4_100", 0, "FB=4_100", "100 is out of range"),
        ("FB=-4", 0, "FB=-4", "must not be negative"),
        ("FB=4.5", 0, "FB=4.5", "whole number"),
        ("FB=4;HistoryLength=-1", 5, "HistoryLength=-1", "history length must not be negative"),
        ("FB=4;HistoryLength=", 5, "HistoryLength=", "history length is missing"),
        ("FB=4;HistoryLength=13_24", 5, "HistoryLength=13_24", "whole number"),
        ("FB=4;  =5", 7, "=5", "key before '=' is empty"),
        ("FB=4;hello", 5, "hello", "Key=value or one of the legacy scopes"),
        ("FB=4;Interval Duration=900", 5, "Interval Duration=900", "malformed key"),
        ("FB=4;BlockDuration=hourly", 5, "BlockDuration=hourly", "one of daily, weekly, monthly"),
        ("FB=4;BlockDuration=", 5, "BlockDuration=", "needs at least one value"),
        (
            "SubscriptionFrequency=Daily_weekly",
            0,
            "SubscriptionFrequency=Daily_weekly",
            "subscription frequency",
        ),
        ("AccountCollection=many", 0, "AccountCollection=many", "account collection must be a whole number"),
        ("FB=4;BR=a/b", 5, "BR=a/b", "bulk id"),
        ("FB=4;BR=", 5, "BR=", "bulk id (BR=) is missing"),
        ("FB=FB_4_FB_5", 0, "FB=FB_4_FB_5", "without the 'FB_' prefix"),
        ("FB_4_5", 0, "FB_4_5", "not FB_4_5"),
        ("FB=4;ThirdParty_Admin_Access", 5, "ThirdParty_Admin_Access", "stands alone"),
        ("ThirdParty_Admin_Access;FB=4", 0, "ThirdParty_Admin_Access", "stands alone"),
        ("HistoryLength=13;HistoryLength=24", 17, "HistoryLength=24", "13 and 24"),
        (
            "SubscriptionFrequency=daily; subscriptionfrequency=weekly",
            29,
            "subscriptionfrequency=weekly",
            "twice",
        ),
        ("FB=\u0663", 0, "FB=\u0663", "whole number"),  # ARABIC-INDIC DIGIT THREE: int() would accept it
        ("FB=1_000", 0, "FB=1_000", "out of range"),  # int() would read "1_000" as 1000; we read 1 and 0
        ("HistoryLength=" + "9" * 30, 0, "HistoryLength=" + "9" * 30, "too large"),
        ("HistoryLength=" + "1" * 5000, 0, "HistoryLength=" + "1" * 5000, "too large"),
        ("AccountCollection=9223372036854775808", 0, "AccountCollection=9223372036854775808", "too large"),
    ],
)
def test_errors_name_term_and_position(text, position, term, reason):
    with pytest.raises(ScopeError) as caught:
        parse_scope(text)
    error = caught.value
    assert error.position == position
    assert error.term == term
    assert reason in error.message
    assert f"at position {position}" in str(error)
    assert isinstance(error, EspiError)


def test_error_message_format():
    with pytest.raises(ScopeError) as caught:
        parse_scope("FB=4_5;BR=1;IntervalDuration=abc")
    assert str(caught.value) == (
        "scope term 3 'IntervalDuration=abc' at position 12: interval duration must be a whole number of "
        "seconds or one of daily, weekly, monthly, billingPeriod, seasonal, yearly, got 'abc'"
    )
    assert caught.value.index == 3


def test_error_message_shortens_long_terms_but_keeps_the_whole_term():
    term = "FB=" + "4_" * 100 + "x"
    with pytest.raises(ScopeError) as caught:
        parse_scope(term)
    assert caught.value.term == term
    assert len(str(caught.value)) < len(term) + 100


def test_numbers_at_the_limit():
    assert parse_scope(f"HistoryLength={MAX_NUMBER}").history_length == MAX_NUMBER
    assert parse_scope("FB=99").function_blocks == (99,)
    assert parse_scope("IntervalDuration=0").interval_durations == (0,)


def test_scope_error_survives_pickling():
    with pytest.raises(ScopeError) as caught:
        parse_scope("FB=4;FB=x")
    copy = pickle.loads(pickle.dumps(caught.value))
    assert (copy.term, copy.position, copy.index, str(copy)) == (
        "FB=x",
        5,
        2,
        str(caught.value),
    )


def test_overlong_text_is_refused_before_parsing():
    text = "FB=4;" * (MAX_SCOPE_TEXT // 5 + 1)
    for parse in (parse_scope, parse_scopes):
        with pytest.raises(ScopeError, match="too long"):
            parse(text)
    at_limit = ("FB=4;" * (MAX_SCOPE_TEXT // 5)).ljust(MAX_SCOPE_TEXT)
    assert parse_scope(at_limit) == Scope(function_blocks=(4,))


@pytest.mark.parametrize("value", [None, b"FB=4", 4, ["FB=4"]])
def test_non_text_is_a_scope_error(value):
    with pytest.raises(ScopeError):
        parse_scope(value)
    with pytest.raises(ScopeError):
        parse_scopes(value)


# ------------------------------------------------------------------------------------------------------------
# The Scope value


def test_constructor_normalizes():
    scope = Scope(
        function_blocks=[5, 4, 5],
        interval_durations=["Daily", 3600, 900, 3600],
        bulk_ids={"b", "a"},
        legacy_name=None,
    )
    assert scope.function_blocks == (4, 5)
    assert scope.interval_durations == (900, 3600, "daily")
    assert scope.bulk_ids == ("a", "b")
    assert hash(scope) == hash(
        Scope(function_blocks=(4, 5), interval_durations=(900, 3600, "daily"), bulk_ids=("a", "b"))
    )
    assert Scope(legacy_name="thirdparty_admin_access").legacy_name == "ThirdParty_Admin_Access"


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"function_blocks": (0,)}, "function_blocks[0]: Function Block number 0 is out of range"),
        ({"function_blocks": (4, "5")}, "function_blocks[1]: Function Block number must be an integer"),
        ({"function_blocks": (True,)}, "must be an integer"),
        ({"function_blocks": "45"}, "function_blocks must be a list"),
        ({"function_blocks": 4}, "function_blocks must be a list"),
        ({"interval_durations": (-1,)}, "must not be negative"),
        ({"interval_durations": ("hourly",)}, "one of daily"),
        ({"interval_durations": (1.5,)}, "interval_durations[0]"),
        ({"block_durations": ("3600",)}, "one of daily"),
        ({"history_length": -1}, "history_length: history length must not be negative"),
        ({"history_length": 2**63}, "too large"),
        ({"subscription_frequency": "often"}, "subscription_frequency"),
        ({"account_collection": "5"}, "must be an integer"),
        ({"bulk_ids": ("a b",)}, "bulk_ids[0]"),
        ({"bulk_ids": ("",)}, "bulk id"),
        ({"unknown_terms": (("FB", "4"),)}, "known key"),
        ({"unknown_terms": (("historylength", "4"),)}, "known key"),
        ({"unknown_terms": (("X", "a;b"),)}, "must not contain ';'"),
        ({"unknown_terms": (("X", " a"),)}, "start or end with blanks"),
        ({"unknown_terms": (("", "a"),)}, "ASCII word"),
        ({"unknown_terms": (("X",),)}, "(key, value) pair"),
        ({"legacy_name": "Admin"}, "legacy scope must be one of"),
        ({"legacy_name": "ThirdParty_Admin_Access", "function_blocks": (4,)}, "stands alone"),
    ],
)
def test_constructor_rejects_invalid_values(fields, reason):
    with pytest.raises(ScopeError) as caught:
        Scope(**fields)
    assert reason in str(caught.value)


def test_history_length_seconds_needs_an_explicit_unit():
    months, seconds = Scope(history_length=13), Scope(history_length=34128000)
    assert months.history_length_seconds(assume="months") == 13 * SECONDS_PER_MONTH
    assert months.history_length_seconds(assume="seconds") == 13
    assert months.history_length_seconds(assume="heuristic") == 13 * SECONDS_PER_MONTH
    assert seconds.history_length_seconds(assume="heuristic") == 34128000
    assert seconds.history_length_seconds(assume="months") == 34128000 * SECONDS_PER_MONTH
    assert Scope().history_length_seconds(assume="heuristic") is None
    below, at = Scope(history_length=HISTORY_MONTHS_BELOW - 1), Scope(history_length=HISTORY_MONTHS_BELOW)
    assert below.history_length_seconds(assume="heuristic") == (HISTORY_MONTHS_BELOW - 1) * SECONDS_PER_MONTH
    assert at.history_length_seconds(assume="heuristic") == HISTORY_MONTHS_BELOW
    with pytest.raises(TypeError):
        months.history_length_seconds()  # type: ignore[call-arg]
    with pytest.raises(ValueError):
        months.history_length_seconds(assume="days")  # type: ignore[arg-type]


def test_covers_function_blocks_and_durations():
    offered = parse_scope(
        "FB=1_3_4_5_13_14_39;IntervalDuration=900_3600;BlockDuration=monthly;HistoryLength=13"
    )
    assert offered.covers(parse_scope("FB=4_5"))
    assert offered.covers(parse_scope("FB=4_5;IntervalDuration=900"))
    assert not offered.covers(parse_scope("FB=4_5_15"))
    assert not offered.covers(parse_scope("FB=4;IntervalDuration=300"))
    assert not offered.covers(parse_scope("FB=4;BlockDuration=daily"))
    # 86400 seconds and "daily" are different promises.
    assert not parse_scope("IntervalDuration=86400").covers(parse_scope("IntervalDuration=daily"))


def test_covers_only_what_is_stated():
    assert not parse_scope("FB=4_5").covers(parse_scope("FB=4;IntervalDuration=900"))
    assert not parse_scope("FB=4_5").covers(parse_scope("FB=4;HistoryLength=13"))
    assert not parse_scope("FB=4_5").covers(parse_scope("FB=4;SubscriptionFrequency=daily"))
    assert not parse_scope("FB=4_5").covers(parse_scope("FB=4;AccountCollection=1"))
    assert not parse_scope("FB=4_5").covers(parse_scope("FB=4;BR=1"))
    assert not parse_scope("FB=4_5").covers(parse_scope("FB=4;Extra=1"))
    assert parse_scope("FB=4_5;Extra=1;Other=2").covers(parse_scope("FB=4;Extra=1"))
    assert not parse_scope("FB=4_5;Extra=2").covers(parse_scope("FB=4;Extra=1"))


def test_covers_history_length_in_seconds():
    months_13 = parse_scope("FB=4;HistoryLength=13")
    seconds_395_days = parse_scope("FB=4;HistoryLength=34128000")
    # heuristic: 13 average months (≈395.6 days) are a little more than 395 days
    assert months_13.covers(seconds_395_days)
    assert not seconds_395_days.covers(months_13)
    assert parse_scope("FB=4;HistoryLength=24").covers(months_13)
    assert not months_13.covers(parse_scope("FB=4;HistoryLength=24"))
    # read literally as seconds, 13 is shorter than anything the other asks for
    assert not months_13.covers(seconds_395_days, history_units="seconds")
    assert seconds_395_days.covers(months_13, history_units="seconds")


def test_covers_frequency_accounts_and_bulk():
    assert parse_scope("FB=4;SubscriptionFrequency=daily").covers(
        parse_scope("FB=4;SubscriptionFrequency=Daily")
    )
    assert not parse_scope("FB=4;SubscriptionFrequency=weekly").covers(
        parse_scope("SubscriptionFrequency=daily")
    )
    assert parse_scope("FB=4;AccountCollection=5").covers(parse_scope("AccountCollection=3"))
    assert not parse_scope("FB=4;AccountCollection=2").covers(parse_scope("AccountCollection=3"))
    assert parse_scope("FB=35;BR=1;BR=2").covers(parse_scope("FB=35;BR=2"))


def test_covers_legacy_and_empty():
    admin = Scope(legacy_name="ThirdParty_Admin_Access")
    assert admin.covers(Scope(legacy_name="thirdparty_admin_access"))
    assert not admin.covers(Scope(legacy_name="DataCustodian_Admin_Access"))
    assert not admin.covers(parse_scope("FB=34_35"))
    assert not parse_scope("FB=34_35").covers(admin)
    assert admin.covers(Scope())
    assert Scope().covers(Scope())
    assert not Scope().covers(parse_scope("FB=4"))


def test_with_function_blocks_replaces_and_validates():
    offered = parse_scope("FB=1_3_4_5_13_14_39;IntervalDuration=3600;BlockDuration=monthly;HistoryLength=13")
    narrowed = offered.with_function_blocks([5, 4, 1])
    assert format_scope(narrowed) == "FB=1_4_5;IntervalDuration=3600;BlockDuration=monthly;HistoryLength=13"
    assert offered.covers(narrowed)
    assert not narrowed.covers(offered)
    with pytest.raises(ScopeError, match="out of range"):
        offered.with_function_blocks([4, 120])
    with pytest.raises(ScopeError, match="stands alone"):
        Scope(legacy_name="ThirdParty_Admin_Access").with_function_blocks([4])


# ------------------------------------------------------------------------------------------------------------
# Function Block catalogue


def test_function_block_catalogue():
    assert function_block(4).name == "Interval Metering"
    assert function_block(5).name == "Electricity Interval Metering"
    assert function_block(1).certification is Certification.MANDATORY
    assert function_block(39).certification is Certification.CMD_MANDATORY
    assert function_block(2).certification is Certification.DMD_MANDATORY
    assert function_block(68).certification is Certification.RESERVED
    assert function_block(51).retail_customer and not function_block(39).retail_customer
    assert {n for n in FUNCTION_BLOCKS if n in RETAIL_CUSTOMER_RANGE} == set(range(51, 71))
    for missing in (0, 21, 24, 25, 26, 42, 43, 46, 47, 48, 49, 50, 71, 100):
        assert function_block(missing) is None
    assert all(number == fb.number for number, fb in FUNCTION_BLOCKS.items())
    assert list(FUNCTION_BLOCKS) == sorted(FUNCTION_BLOCKS)


def test_numbering_conflicts_are_noted():
    assert "swap" in function_block(41).note and "swap" in function_block(44).note
    assert "FB_31" in function_block(14).note
    assert function_block(4).note is None
    for harness_number in range(46, 51):
        assert "[FB_46]-[FB_50]" in numbering_note(harness_number)
    assert "FB_23" in numbering_note(46)
    assert numbering_note(4) is None


# ------------------------------------------------------------------------------------------------------------
# JSON


def test_scope_to_json_names_function_blocks():
    scope = parse_scope(
        "FB=4_5_45_99_21;IntervalDuration=900_3600;BlockDuration=Daily;HistoryLength=13;BR=1;X=y"
    )
    assert scope_to_json(scope) == {
        "function_blocks": [
            {"number": 4, "name": "Interval Metering"},
            {"number": 5, "name": "Electricity Interval Metering"},
            {"number": 21, "name": None},
            {"number": 45, "name": "Upload"},
            {"number": 99, "name": "Optional Data Elements (test plan)"},
        ],
        "interval_durations": [900, 3600],
        "block_durations": ["daily"],
        "history_length": 13,
        "subscription_frequency": None,
        "account_collection": None,
        "bulk_ids": ["1"],
        "unknown_terms": [{"key": "X", "value": "y"}],
        "legacy_name": None,
    }


def test_scope_from_json_accepts_numbers_objects_and_pairs():
    scope = scope_from_json(
        {
            "function_blocks": [15, {"number": 4, "name": "whatever"}, 5],
            "interval_durations": [3600],
            "block_durations": ["Monthly"],
            "history_length": 13,
            "unknown_terms": [["X", "1"], {"key": "Y", "value": "2"}],
            "legacy_name": None,
        }
    )
    assert (
        format_scope(scope)
        == "FB=4_5_15;IntervalDuration=3600;BlockDuration=monthly;HistoryLength=13;X=1;Y=2"
    )
    assert scope_from_json({}) == Scope()
    assert scope_from_json({"legacy_name": "ThirdParty_Admin_Access"}).is_legacy


@pytest.mark.parametrize(
    ("obj", "reason"),
    [
        ([], "must be an object, got an array"),
        ("FB=4", "must be an object, got a string"),
        (None, "got null"),
        ({"function_block": [4]}, "unknown field 'function_block'"),
        ({"function_blocks": 4}, "function_blocks must be a list"),
        ({"function_blocks": [4, "5"]}, "function_blocks[1]"),
        (
            {"function_blocks": [{"name": "Interval Metering"}]},
            'function_blocks[0]: a Function Block object needs a "number"',
        ),
        ({"function_blocks": [{"number": 4.0}]}, "must be an integer"),
        ({"function_blocks": [True]}, "must be an integer"),
        ({"interval_durations": [3600.5]}, "interval_durations[0]"),
        ({"history_length": "13"}, "history_length: history length must be an integer"),
        ({"subscription_frequency": []}, "subscription_frequency"),
        ({"bulk_ids": "1"}, "bulk_ids must be a list"),
        (
            {"unknown_terms": [{"key": "X"}]},
            'unknown_terms[0]: an unknown term object has exactly "key" and "value"',
        ),
        ({"unknown_terms": ["X=1"]}, "unknown_terms[0]"),
        ({"unknown_terms": [["X", 1]]}, "must be a string"),
        ({"legacy_name": 5}, "legacy scope must be one of"),
    ],
)
def test_scope_from_json_rejects_bad_shapes(obj, reason):
    with pytest.raises(ScopeError) as caught:
        scope_from_json(obj)
    assert reason in str(caught.value)


# ------------------------------------------------------------------------------------------------------------
# CLI


def test_cli_parse_prints_json(capsys):
    assert (
        main(["scope", "parse", "FB=4_5_15;IntervalDuration=3600;BlockDuration=monthly;HistoryLength=13"])
        == 0
    )
    out, err = capsys.readouterr()
    assert err == ""
    assert json.loads(out) == scope_to_json(
        parse_scope("FB=4_5_15;IntervalDuration=3600;BlockDuration=monthly;HistoryLength=13")
    )
    assert out.startswith('{\n  "function_blocks": [\n    {\n      "number": 4,')


def test_cli_parse_list_and_stdin(capsys, monkeypatch):
    monkeypatch.setattr(
        "sys.stdin", io.StringIO(XSD_APPLICATION_INFORMATION_EXAMPLE + " ThirdParty_Admin_Access\n")
    )
    assert main(["scope", "parse", "--list", "-"]) == 0
    parsed = json.loads(capsys.readouterr().out)
    assert [item["legacy_name"] for item in parsed] == [None, "ThirdParty_Admin_Access"]
    assert parsed[0]["history_length"] == 34128000


def test_cli_parse_error(capsys):
    assert main(["scope", "parse", "FB=4;IntervalDuration=abc"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("greenbridge scope: scope term 2 'IntervalDuration=abc' at position 5: ")


def test_cli_format_argument_and_stdin(capsys, monkeypatch):
    document = json.dumps(
        {"function_blocks": [{"number": 5}, 4], "block_durations": ["Daily"], "bulk_ids": ["1"]}
    )
    assert main(["scope", "format", document]) == 0
    assert capsys.readouterr().out == "FB=4_5;BlockDuration=daily;BR=1\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(document))
    assert main(["scope", "format", "--terminated", "-"]) == 0
    assert capsys.readouterr().out == "FB=4_5;BlockDuration=daily;BR=1;\n"


def test_cli_parse_then_format_round_trips(capsys, monkeypatch):
    assert main(["scope", "parse", XSD_APPLICATION_INFORMATION_EXAMPLE]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO(capsys.readouterr().out))
    assert main(["scope", "format", "-"]) == 0
    assert parse_scope(capsys.readouterr().out) == parse_scope(XSD_APPLICATION_INFORMATION_EXAMPLE)


def test_cli_format_list(capsys):
    assert (
        main(
            ["scope", "format", '[{"function_blocks": [34, 35]}, {"legacy_name": "ThirdParty_Admin_Access"}]']
        )
        == 0
    )
    assert capsys.readouterr().out == "FB=34_35\nThirdParty_Admin_Access\n"
    assert main(["scope", "format", '[{"function_blocks": [4]}, {"function_blocks": [0]}]']) == 1
    assert capsys.readouterr().err == (
        "greenbridge scope: scope 2: function_blocks[0]: Function Block number 0 is out of range 1..99\n"
    )


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ('{"function_blocks": [4,', "invalid JSON at line 1, column 24: Expecting value"),
        (
            '{\n  "function_blocks": [4]\n  "x": 1}',
            "invalid JSON at line 3, column 3: Expecting ',' delimiter",
        ),
        ("[" * 100_000, "invalid JSON"),
        ('{"history_length": ' + "1" * 5000 + "}", "invalid JSON"),
        ('{"function_blocks": ["4"]}', "function_blocks[0]: Function Block number must be an integer"),
        ('{"colour": "green"}', "unknown field 'colour'"),
    ],
)
def test_cli_format_errors(capsys, document, message):
    assert main(["scope", "format", document]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"greenbridge scope: {message}")


@pytest.mark.parametrize("argv", [["scope"], ["scope", "parse"], ["scope", "frobnicate", "x"]])
def test_cli_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2


# ------------------------------------------------------------------------------------------------------------
# Properties

_KEY_CHARS = string.ascii_letters + string.digits + "_.-"
_KNOWN_FOLDED = {key.lower() for key in KNOWN_KEYS}

durations = st.one_of(st.integers(0, MAX_NUMBER), st.sampled_from(NAMED_FREQUENCIES))
unknown_keys = st.builds(
    str.__add__, st.sampled_from(string.ascii_letters + "_"), st.text(_KEY_CHARS, max_size=10)
).filter(lambda key: key.lower() not in _KNOWN_FOLDED)
unknown_values = st.text(
    st.characters(blacklist_characters=";", blacklist_categories=("Cs",)), max_size=20
).map(str.strip)
bulk_ids = st.text(string.ascii_letters + string.digits + "._~-", min_size=1, max_size=10)


def term_scopes(values=unknown_values) -> st.SearchStrategy[Scope]:
    return st.builds(
        Scope,
        function_blocks=st.lists(st.integers(1, 99), max_size=12).map(tuple),
        interval_durations=st.lists(durations, max_size=4).map(tuple),
        block_durations=st.lists(durations, max_size=4).map(tuple),
        history_length=st.none() | st.integers(0, MAX_NUMBER),
        subscription_frequency=st.none() | durations,
        account_collection=st.none() | st.integers(0, MAX_NUMBER),
        bulk_ids=st.lists(bulk_ids, max_size=3).map(tuple),
        unknown_terms=st.lists(st.tuples(unknown_keys, values), max_size=3).map(tuple),
    )


scopes = st.one_of(term_scopes(), st.sampled_from(LEGACY_SCOPES).map(lambda name: Scope(legacy_name=name)))

#: Fragments that make up scope-like text, junk included.
_FRAGMENTS = [
    "FB", "fb", "FB_", "=", ";", "_", " ", ",", "\n", "\t", "\u00a0", "0", "1", "4", "13", "99", "100", "-",
    "1937", "9" * 25, "IntervalDuration", "BlockDuration", "HistoryLength", "historyLength",
    "SubscriptionFrequency", "AccountCollection", "BR", "daily", "Daily", "billingPeriod", "yearly", "hourly",
    "ThirdParty_Admin_Access", "thirdparty_admin_access", "x", "X=y", "\u0663", "\u212a", ".", "~", "/", "é",
]  # fmt: skip
scope_like_text = st.lists(st.sampled_from(_FRAGMENTS), max_size=30).map("".join)
any_text = st.one_of(st.text(max_size=60), scope_like_text)


@settings(max_examples=120)
@given(scopes)
def test_canonical_scopes_round_trip(scope):
    text = format_scope(scope)
    assert parse_scope(text) == scope
    assert format_scope(parse_scope(text)) == text
    assert parse_scope(format_scope(scope, terminated=True)) == scope


@settings(max_examples=120)
@given(scopes)
def test_json_round_trip(scope):
    assert scope_from_json(json.loads(json.dumps(scope_to_json(scope)))) == scope


@settings(max_examples=50)
@given(st.lists(term_scopes(st.text(_KEY_CHARS, max_size=8)), min_size=1, max_size=4))
def test_scope_lists_round_trip(scope_list):
    # Every scope but a first one without FB must begin with FB= to start a new scope (see parse_scopes).
    expected = [s for s in scope_list if not s.is_empty]
    listed = [s for i, s in enumerate(expected) if i == 0 or s.function_blocks]
    text = " ".join(format_scope(s) for s in listed)
    assert parse_scopes(text) == listed


@settings(max_examples=300)
@given(any_text)
def test_parsers_raise_nothing_but_scope_error(text):
    for parse in (parse_scope, parse_scopes):
        try:
            parse(text)
        except ScopeError as error:
            assert error.position is None or 0 <= error.position < len(text)
            assert error.term is None or error.term in text
            str(error)


@settings(max_examples=300)
@given(any_text)
def test_whatever_parses_formats_to_an_equal_scope(text):
    try:
        scope = parse_scope(text)
    except ScopeError:
        return
    canonical = format_scope(scope)
    assert parse_scope(canonical) == scope
    assert format_scope(parse_scope(canonical)) == canonical


@settings(max_examples=80)
@given(scopes, scopes)
def test_covers_is_reflexive_and_respects_added_function_blocks(first, second):
    assert first.covers(first)
    assert first.covers(Scope())
    if not first.is_legacy:
        widened = first.with_function_blocks(first.function_blocks + second.function_blocks)
        assert widened.covers(first)
        assert widened.covers(first.with_function_blocks(()))


@settings(max_examples=80)
@given(st.lists(st.integers(1, 99), min_size=1, max_size=10), st.lists(st.integers(1, 99), max_size=10))
def test_covers_function_blocks_is_the_subset_relation(offered, asked):
    assert Scope(function_blocks=offered).covers(Scope(function_blocks=asked)) == set(asked).issubset(offered)


@settings(max_examples=80)
@given(any_text)
def test_scope_from_json_raises_nothing_but_scope_error(text):
    for obj in (
        {"function_blocks": [text]},
        {"unknown_terms": [[text, text]]},
        {"bulk_ids": [text]},
        {text: 1},
    ):
        with contextlib.suppress(ScopeError):
            scope_from_json(obj)
