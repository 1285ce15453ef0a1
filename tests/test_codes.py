"""espi.codes and espi.currency: the tables are checked entry by entry against the shipped schemas.

The schemas are read here with lxml, independently of the module under test, so a typo in a transcribed table
(a wrong code, a misspelt name, a missing entry, a list marked open that the schema closes) fails a test.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lxml import etree

from espi import codes
from espi.codes import CodeTable
from espi.currency import NOT_A_CURRENCY, _alpha, currency_alpha

REPO = Path(__file__).resolve().parent.parent
ESPI_XSD = REPO / "xsd" / "espi.xsd"
CUSTOMER_XSD = REPO / "xsd" / "customer.xsd"
#: GBA's ESPI 3.3 usage schema, beside the checkout (read in place, never copied); only for the extension check.
ESPI_33_XSD = REPO.parent / "shared" / "espi" / "xsd" / "v3.3" / "usage.xsd"
XS = "{http://www.w3.org/2001/XMLSchema}"

#: Codes the tables add to the 4.0 schema, each with its justification. Anything else is a transcription error.
DOCUMENTED_EXTENSIONS = {
    # GBA's 3.3 usage.xsd: "[GBA Extension] Weather service" (espi.md §1.12; most CMD custodians speak 3.3).
    "ServiceKind": {10: "weather"},
}


@dataclasses.dataclass
class SchemaList:
    name: str
    open_list: bool
    numeric: bool
    values: list  # int or str, schema order
    appinfo: dict  # value -> appinfo text (only where the schema has one)
    documentation: dict  # value -> documentation text


def schema_lists(path: Path) -> dict[str, SchemaList]:
    """Every named simpleType with enumerations, read straight from the XSD."""
    root = etree.parse(str(path)).getroot()
    lists = {}
    for simple in root.iter(f"{XS}simpleType"):
        name = simple.get("name")
        enums = simple.findall(f".//{XS}enumeration")
        if not name or not enums:
            continue
        union = simple.find(f"{XS}union")
        numeric = union is not None and union.get("memberTypes") in ("UInt16", "Int16")
        values, appinfo, documentation = [], {}, {}
        for enum in enums:
            value = int(enum.get("value")) if numeric else enum.get("value")
            values.append(value)
            info = enum.find(f"{XS}annotation/{XS}appinfo")
            doc = enum.find(f"{XS}annotation/{XS}documentation")
            if info is not None:
                appinfo[value] = info.text
            if doc is not None:
                documentation[value] = doc.text
        lists[name] = SchemaList(name, union is not None, numeric, values, appinfo, documentation)
    return lists


def schema_uses(path: Path, type_names) -> dict[str, set[str]]:
    """``type → {"ComplexType.element", …}`` for every element typed with one of ``type_names``."""
    root = etree.parse(str(path)).getroot()
    uses: dict[str, set[str]] = {name: set() for name in type_names}
    for element in root.iter(f"{XS}element"):
        type_name = (element.get("type") or "").rpartition(":")[2]
        if type_name not in uses:
            continue
        owner = next(element.iterancestors(f"{XS}complexType"))
        owner_name = owner.get("name") or next(owner.iterancestors(f"{XS}element")).get("name")
        uses[type_name].add(f"{owner_name}.{element.get('name')}")
    return uses


ESPI_LISTS = schema_lists(ESPI_XSD)
CUSTOMER_LISTS = schema_lists(CUSTOMER_XSD)
CASES = [("espi", name) for name in ESPI_LISTS] + [("customer", name) for name in CUSTOMER_LISTS]


def lookup(schema: str, type_name: str) -> tuple[SchemaList, CodeTable]:
    if schema == "espi":
        return ESPI_LISTS[type_name], codes.ESPI_TABLES[type_name]
    return CUSTOMER_LISTS[type_name], codes.CUSTOMER_TABLES[type_name]


def test_every_enumerated_schema_type_has_a_table_and_no_more():
    assert set(codes.ESPI_TABLES) == set(ESPI_LISTS)
    assert set(codes.CUSTOMER_TABLES) == set(CUSTOMER_LISTS)
    # The brief's ~45 lists plus the node/MPM lists; a sanity floor so an empty parse cannot pass vacuously.
    assert len(ESPI_LISTS) == 34 and len(CUSTOMER_LISTS) == 14


@pytest.mark.parametrize(("schema", "type_name"), CASES, ids=[f"{s}:{n}" for s, n in CASES])
def test_table_matches_schema(schema, type_name):
    listed, table = lookup(schema, type_name)
    assert table.xsd_type == type_name
    assert table.open_list == listed.open_list, "open (xs:union) vs closed (restriction) differs from the XSD"
    assert table.numeric == listed.numeric
    extensions = DOCUMENTED_EXTENSIONS.get(type_name, {}) if schema == "espi" else {}
    # Exactly the schema's values, in schema order, then the documented extensions.
    assert [code for code in table if code not in table.extensions] == listed.values
    assert {code: table.name(code) for code in table.extensions} == extensions
    named = listed
    if schema == "customer" and table is codes.ESPI_TABLES.get(type_name):
        # A shared table: customer.xsd's copy of UnitMultiplierKind has no appinfo, the names are espi.xsd's.
        named = ESPI_LISTS[type_name]
    for value in listed.values:
        if value in named.appinfo:
            expected = named.appinfo[value]
        elif listed.numeric:
            # ItemKind has no appinfo: its names are the first sentence of the documentation.
            expected = listed.documentation[value].split(".")[0].strip()
        else:
            expected = value  # string lists: the value is the name
        assert table.name(value) == expected, f"{type_name} {value!r}"


def test_documented_extensions_are_the_only_ones():
    found = {table.xsd_type: {code: table.name(code) for code in table.extensions}
             for table in codes.ESPI_TABLES.values() if table.extensions}
    assert found == DOCUMENTED_EXTENSIONS
    assert not any(table.extensions for table in codes.CUSTOMER_TABLES.values())


def test_service_kind_extension_is_what_gba_33_declares():
    if not ESPI_33_XSD.is_file():
        pytest.skip(f"GBA 3.3 schema not available ({ESPI_33_XSD})")
    v33 = schema_lists(ESPI_33_XSD)["ServiceKind"]
    assert v33.values == list(codes.SERVICE_KIND)
    assert {code: v33.appinfo[code] for code in v33.values} == dict(codes.SERVICE_KIND.items())


@pytest.mark.parametrize("schema", ["espi", "customer"])
def test_used_by_names_exactly_the_elements_typed_with_each_list(schema):
    path, tables, prefix = ((ESPI_XSD, codes.ESPI_TABLES, "") if schema == "espi"
                            else (CUSTOMER_XSD, codes.CUSTOMER_TABLES, "cust:"))
    uses = schema_uses(path, tables)
    for type_name, table in tables.items():
        mine = {use.removeprefix("cust:") for use in table.used_by if use.startswith("cust:") == bool(prefix)}
        assert mine == uses[type_name], type_name


def test_customer_copies_of_shared_lists_are_the_espi_lists():
    # customer.xsd repeats these five types; one table serves both, so their values must agree.
    for type_name in ("Currency", "StatusCode", "CRUDOperation", "UnitMultiplierKind", "UnitSymbolKind"):
        assert codes.CUSTOMER_TABLES[type_name] is codes.ESPI_TABLES[type_name]
        assert CUSTOMER_LISTS[type_name].values == ESPI_LISTS[type_name].values
    # EnrollmentStatus is the exception: open in customer.xsd, closed in espi.xsd, so two tables.
    assert codes.CUSTOMER_TABLES["EnrollmentStatus"].open_list
    assert not codes.ESPI_TABLES["EnrollmentStatus"].open_list


def test_reading_type_codes_cover_every_coded_reading_type_element():
    root = etree.parse(str(ESPI_XSD)).getroot()
    reading_type = root.find(f"{XS}complexType[@name='ReadingType']")
    coded = {element.get("name"): element.get("type") for element in reading_type.iter(f"{XS}element")
             if element.get("type") in ESPI_LISTS}
    assert len(coded) == 12
    assert {name: table.xsd_type for name, table in codes.READING_TYPE_CODES.items()} == coded


def test_well_known_codes_from_the_reference():
    # espi.md §1.4 and the GBA test-plan signatures, spelled out independently of the schema parse.
    assert codes.UNIT_SYMBOL_KIND.name(72) == "Wh"
    assert codes.UNIT_SYMBOL_KIND.name(169) == "therm"
    assert codes.UNIT_SYMBOL_KIND.name(42) == "m3"
    assert codes.UNIT_SYMBOL_KIND.name(119) == "ft3"
    assert codes.UNIT_SYMBOL_KIND.name(128) == "usGal"
    assert codes.UNIT_SYMBOL_KIND.name(38) == "W"
    assert codes.UNIT_SYMBOL_KIND.name(6) == "K"
    assert codes.MEASUREMENT_KIND.name(12) == "energy"
    assert codes.MEASUREMENT_KIND.name(37) == "power"
    assert codes.MEASUREMENT_KIND.name(58) == "volume"
    assert codes.FLOW_DIRECTION_KIND.name(1) == "forward"
    assert codes.FLOW_DIRECTION_KIND.name(19) == "reverse"
    assert codes.FLOW_DIRECTION_KIND.name(4) == "net"
    assert codes.ACCUMULATION_KIND.name(4) == "deltaData"
    assert codes.ACCUMULATION_KIND.name(1) == "bulkQuantity"
    assert codes.COMMODITY_KIND.name(7) == "naturalGas"
    assert codes.COMMODITY_KIND.name(9) == "potableWater"
    assert codes.SERVICE_KIND.name(0) == "electricity"
    assert codes.UNIT_MULTIPLIER_KIND.name(-3) == "m"
    assert codes.UNIT_MULTIPLIER_KIND.name(3) == "k"
    assert codes.TIME_PERIOD_OF_INTEREST.name(8) == "billingPeriod"
    assert codes.TIME_ATTRIBUTE_KIND.name(53) == "fixedBlock15Min"
    assert codes.PHASE_CODE_KIND.name(769) == "S12N"
    assert codes.QUALITY_OF_READING.name(19) == "revenue-quality"
    assert len(codes.MEASUREMENT_KIND) == 125 and len(codes.UNIT_SYMBOL_KIND) == 125
    assert len(codes.CURRENCY) == 14


# ---------------------------------------------------------------------------------------------------------
# Behaviour of CodeTable


def test_unknown_codes_are_answers_not_errors():
    uom = codes.UNIT_SYMBOL_KIND
    assert uom.name(65535) is None
    assert 65535 not in uom
    assert uom.describe(65535) == "unknown code 65535"
    assert uom.describe(72) == "Wh (72)"
    assert uom.describe(None) == "no code"
    assert codes.AMI_BILLING_READY_KIND.describe("enabled") == "enabled"
    assert codes.AMI_BILLING_READY_KIND.describe("sortOf") == "unknown code 'sortOf'"
    # Closed in the schema, still a table: pre-2019 Authorizations say "bearer" and response_types "token".
    assert codes.TOKEN_TYPE.name("bearer") is None and codes.TOKEN_TYPE.name("Bearer") == "Bearer"
    assert "token" not in codes.RESPONSE_TYPE


def test_element_text_is_accepted_and_junk_is_not():
    uom = codes.UNIT_SYMBOL_KIND
    assert uom.name(" 72\n") == "Wh"
    assert uom.name("+72") == "Wh"
    assert " 72 " in uom
    assert codes.UNIT_MULTIPLIER_KIND.name("-3") == "m"
    assert codes.USAGE_POINT_CONNECTED_KIND.name("\tconnected ") == "connected"
    # bool is an int subclass, but True is not code 1; nor are floats, digit look-alikes or underscores codes.
    assert codes.SERVICE_KIND.name(True) is None and True not in codes.SERVICE_KIND
    assert codes.SERVICE_KIND.name(1.0) is None
    assert codes.SERVICE_KIND.name("١") is None  # ARABIC-INDIC DIGIT ONE, which int() would accept
    assert codes.STATUS_CODE.name("2_00") is None
    assert codes.STATUS_CODE.describe("2_00") == "unknown code '2_00'"
    assert codes.AMI_BILLING_READY_KIND.name(3) is None
    assert codes.UNIT_SYMBOL_KIND.describe(10**30) == f"unknown code {10**30}"


_ANYTHING = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(), st.binary(),
    st.lists(st.integers(), max_size=3), st.tuples(st.integers()), st.dictionaries(st.text(), st.integers()),
)


@given(value=_ANYTHING, table=st.sampled_from(sorted({*codes.ESPI_TABLES.values(), *codes.CUSTOMER_TABLES.values()},
                                                     key=repr)))
def test_lookups_never_raise(value, table):
    name = table.name(value)
    assert name is None or isinstance(name, str)
    assert isinstance(table.describe(value), str)
    assert (value in table) == (name is not None)
    assert table.code_for(value) is None or isinstance(value, str)
    assert isinstance(table.codes_for(value), tuple)


def test_reverse_lookup_is_exact_and_reports_shared_names():
    assert codes.UNIT_SYMBOL_KIND.code_for("Wh") == 72
    assert codes.UNIT_MULTIPLIER_KIND.code_for("m") == -3
    assert codes.UNIT_MULTIPLIER_KIND.code_for("M") == 6
    assert codes.UNIT_SYMBOL_KIND.code_for("h") == 160 and codes.UNIT_SYMBOL_KIND.code_for("H") == 28
    assert codes.UNIT_SYMBOL_KIND.code_for("wh") is None
    assert codes.PHASE_CODE_KIND.codes_for("S12N") == (784, 769)
    assert codes.PHASE_CODE_KIND.code_for("S12N") == 784  # first in schema order
    assert codes.SERVICE_KIND.code_for("weather") == 10
    assert codes.CUSTOMER_KIND.code_for("residential") == "residential"
    assert codes.CURRENCY.codes_for("XYZ") == ()
    for table in (*codes.ESPI_TABLES.values(), *codes.CUSTOMER_TABLES.values()):
        for code, name in table.items():
            assert code in table.codes_for(name)


def test_iteration_length_and_order():
    assert list(codes.TIME_PERIOD_OF_INTEREST) == [0, 8, 11, 13, 22, 24, 32]
    assert len(codes.TIME_PERIOD_OF_INTEREST) == 7
    assert list(codes.SERVICE_KIND)[-1] == 10  # extensions come after the schema's codes
    assert list(codes.CRUD_OPERATION.items()) == [(0, "Create"), (1, "Read"), (2, "Update"), (3, "Delete")]
    assert repr(codes.UNIT_SYMBOL_KIND) == "<CodeTable UnitSymbolKind: 125 codes, open>"
    assert repr(codes.GRANT_TYPE) == "<CodeTable GrantType: 3 codes, closed>"


def test_tables_are_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        codes.UNIT_SYMBOL_KIND.open_list = False
    with pytest.raises(TypeError):
        codes.UNIT_SYMBOL_KIND._names[72] = "kWh"
    with pytest.raises(TypeError):
        codes.ESPI_TABLES["Mine"] = codes.UNIT_SYMBOL_KIND
    with pytest.raises(TypeError):
        codes.READING_TYPE_CODES["uom"] = codes.CURRENCY
    assert isinstance(codes.UNIT_SYMBOL_KIND.entries, tuple)


def test_malformed_tables_are_refused_at_definition():
    with pytest.raises(ValueError, match="listed twice"):
        CodeTable("X", ((1, "a"), (1, "b")))
    with pytest.raises(TypeError, match="all int or all str"):
        CodeTable("X", ((1, "a"), ("b", "b")))
    with pytest.raises(ValueError, match="not in entries"):
        CodeTable("X", ((1, "a"),), extensions=frozenset({2}))


def test_code_tables_are_not_closed_enums():
    # The brief's rule, enforced: no table in the module is an Enum that would raise on an unknown code.
    import enum

    tables = [value for value in vars(codes).values() if isinstance(value, CodeTable)]
    assert len(tables) == len({*codes.ESPI_TABLES.values(), *codes.CUSTOMER_TABLES.values()})
    assert not [name for name, value in vars(codes).items() if isinstance(value, type) and issubclass(value, enum.Enum)]


# ---------------------------------------------------------------------------------------------------------
# Sentinels


@pytest.mark.parametrize(("p", "ok"), [
    (0, True), (-3, True), (3, True), (24, True), (-24, True), (25, False), (-25, False),
    (codes.MULTIPLIER_SENTINEL, False), (True, False), (3.0, False), ("3", False), (None, False),
])
def test_multiplier_ok(p, ok):
    assert codes.multiplier_ok(p) is ok


def test_sentinel_values_match_the_test_plan_file():
    # sdk_testplan_1hrLP_32Days_Additional_M.xml writes exactly these literals.
    assert codes.INT48_SENTINEL == -140737488355328
    assert codes.TIME_SENTINEL == 2147483647
    assert codes.CODE_SENTINEL == 65535
    assert codes.is_value_sentinel(-140737488355328) and not codes.is_value_sentinel(-140737488355327)
    assert codes.is_time_sentinel(2147483647) and not codes.is_time_sentinel(2147483646)
    assert codes.is_code_sentinel(65535) and not codes.is_code_sentinel(72)
    assert not codes.is_code_sentinel("65535") and not codes.is_value_sentinel(None)
    assert codes.UNIT_SYMBOL_KIND.name(codes.CODE_SENTINEL) is None


@pytest.mark.samples
def test_sentinels_seen_in_the_test_plan_sample(sample):
    path = sample("sdk_testplan_1hrLP_32Days_Additional_M.xml")
    text = path.read_text(encoding="utf-8")
    multipliers = {int(v) for v in re.findall(r"<powerOfTenMultiplier>(-?\d+)<", text)}
    assert codes.MULTIPLIER_SENTINEL in multipliers
    assert {p for p in multipliers if not codes.multiplier_ok(p)} == {codes.MULTIPLIER_SENTINEL}
    assert any(codes.is_code_sentinel(int(v)) for v in re.findall(r"<uom>(\d+)<", text))
    assert any(codes.is_value_sentinel(int(v)) for v in re.findall(r"<value>(-?\d+)<", text))
    assert any(codes.is_time_sentinel(int(v)) for v in re.findall(r"<timeStamp>(\d+)<", text))


# ---------------------------------------------------------------------------------------------------------
# Currency


def test_currency_alpha_agrees_with_the_schema_list():
    # pycountry's ISO table against the schema's appinfo, for every listed code but 0 "other".
    for code, name in codes.CURRENCY.items():
        if code == 0:
            assert currency_alpha(code) is None
        else:
            assert currency_alpha(code) == name, code


@pytest.mark.parametrize(("numeric", "alpha"), [
    (840, "USD"), (124, "CAD"), (36, "AUD"), ("036", "AUD"), (" 840\n", "USD"),
    (554, "NZD"), (484, "MXN"),  # valid ISO codes outside the schema's 14: the list is open
    (0, None), (999, None), (963, None), (1, None), (1000, None), (-840, None),
    (True, None), (None, None), ("abc", None), ("8 40", None), (840.0, None), ("", None),
])
def test_currency_alpha(numeric, alpha):
    assert currency_alpha(numeric) == alpha


def test_currency_alpha_is_cached():
    assert {0, 963, 999} == NOT_A_CURRENCY
    currency_alpha(978)
    before = _alpha.cache_info().hits
    assert currency_alpha(978) == "EUR"
    assert _alpha.cache_info().hits == before + 1
