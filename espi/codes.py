"""ESPI code tables: every enumerated simpleType of ``xsd/espi.xsd`` and ``xsd/customer.xsd`` (4.0.20231213).

Names are the schema's ``xs:appinfo`` texts (espi.md §1.10), so ``UNIT_SYMBOL_KIND.name(72) == "Wh"`` and
``UNIT_SYMBOL_KIND.name(42) == "m3"``. Lists without appinfo use the value itself (string lists) or, for
``ItemKind``, the first sentence of the schema documentation ("Energy Generation Fee"). The customer lists are
espi.md §1.11. ``tests/test_codes.py`` re-reads both schemas and checks every table entry by entry, so these
literals can be trusted as a transcription, not a paraphrase.

Why tables and not ``enum.Enum``: ESPI code lists are *open*. Each numeric ``*Kind`` is an ``xs:union`` of
``UInt16`` (``Int16`` for ``UnitMultiplierKind``) with an enumerated restriction, so any integer validates
(espi.md §1.1), and real files do use codes outside the lists: TimeAttributeKind codes in ``timeAttribute``
(espi.md §1.4), GBA test-plan sentinels such as uom 65535, the 3.3 ``ServiceKind`` 10. A closed enum would
turn such a file into an exception; a :class:`CodeTable` answers ``None`` / ``"unknown code 65535"`` and lets
the caller pass the raw code through. Lookups never raise, whatever they are given. Even the lists the schema
closes (``restriction`` of ``String32``: OAuth values, ``amiBillingReady``…) are tables, because pre-2019 data
breaks them too (``token_type=bearer``, ``response_types=token``, espi.md §1.12); ``CodeTable.open_list``
records what the schema says.

Everything here is immutable module data; nothing is read from disk at import time.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Generic, TypeVar

K = TypeVar("K", int, str)

#: XML whitespace (XML 1.0 production S); codes read from element text are compared without it.
_XML_WS = " \t\r\n"
_INTEGER = re.compile(r"[+-]?[0-9]+")


@dataclass(frozen=True, eq=False)
class CodeTable(Generic[K]):
    """One ESPI code list: codes (``int`` for numeric lists, ``str`` for string lists) with their names.

    ``entries`` keep schema order (so the table reads like the XSD); ``extensions`` are the codes that are not
    in the 4.0 schema but are documented elsewhere (each justified where the table is defined). ``used_by``
    names the elements typed with this list, as ``ComplexType.element`` (``cust:`` for customer.xsd).

    Lookups accept what a parser hands over — an ``int``, or element text such as ``" 72 "`` — and answer
    ``None`` or ``False`` for anything else instead of raising: an unknown code is data to pass through.
    """

    xsd_type: str
    entries: tuple[tuple[K, str], ...]
    open_list: bool = True
    used_by: tuple[str, ...] = ()
    extensions: frozenset[K] = frozenset()
    _names: Mapping[K, str] = field(init=False, repr=False)
    _codes: Mapping[str, tuple[K, ...]] = field(init=False, repr=False)
    _numeric: bool = field(init=False, repr=False)

    def __post_init__(self) -> None:
        names: dict[K, str] = {}
        codes: dict[str, list[K]] = {}
        kinds = {type(code) for code, _name in self.entries}
        if len(kinds) > 1 or kinds - {int, str}:
            raise TypeError(f"{self.xsd_type}: codes must be all int or all str, got {kinds}")
        for code, name in self.entries:
            if code in names:
                raise ValueError(f"{self.xsd_type}: code {code!r} listed twice")
            names[code] = name
            codes.setdefault(name, []).append(code)
        if not self.extensions <= names.keys():
            stray = set(self.extensions - names.keys())
            raise ValueError(f"{self.xsd_type}: extensions {stray} not in entries")
        object.__setattr__(self, "_numeric", int in kinds)
        object.__setattr__(self, "_names", MappingProxyType(names))
        object.__setattr__(self, "_codes", MappingProxyType({n: tuple(c) for n, c in codes.items()}))

    @property
    def numeric(self) -> bool:
        """True for the UInt16/Int16 lists, False for the string lists."""
        return self._numeric

    def _key(self, code: object) -> K | None:
        """The lookup key for ``code``, or None when it cannot be a code of this table at all."""
        if self._numeric:
            if isinstance(code, bool):  # bool is an int subclass; True is not code 1
                return None
            if isinstance(code, int):
                return code
            if isinstance(code, str) and _INTEGER.fullmatch(text := code.strip(_XML_WS)):
                return int(text)
            return None
        if isinstance(code, str):
            return code.strip(_XML_WS)
        return None

    def name(self, code: object) -> str | None:
        """The schema name of ``code`` (``"Wh"`` for uom 72), or None for an unknown or malformed code."""
        key = self._key(code)
        return None if key is None else self._names.get(key)

    def describe(self, code: object) -> str:
        """A label for logs and reports, whatever the input: ``"Wh (72)"``, ``"unknown code 65535"``."""
        if code is None:
            return "no code"
        key = self._key(code)
        name = None if key is None else self._names.get(key)
        if name is None:
            shown = key if isinstance(key, int) else repr(key if key is not None else code)
            return f"unknown code {shown}"
        return f"{name} ({key})" if self.numeric else name

    def code_for(self, name: str) -> K | None:
        """Reverse lookup by exact name; the first code in schema order when a name is shared.

        Matching is case-sensitive on purpose: ``UNIT_MULTIPLIER_KIND`` has ``m`` (milli) and ``M`` (mega),
        ``UNIT_SYMBOL_KIND`` has ``h`` (hour) and ``H`` (henry). ``PHASE_CODE_KIND`` names two codes ``S12N``
        (784 and 769); :meth:`codes_for` returns both.
        """
        codes = self.codes_for(name)
        return codes[0] if codes else None

    def codes_for(self, name: str) -> tuple[K, ...]:
        """Every code with this exact name, in schema order (empty when none)."""
        return self._codes.get(name, ()) if isinstance(name, str) else ()

    def items(self) -> Iterator[tuple[K, str]]:
        """``(code, name)`` pairs in schema order, extensions last."""
        return iter(self.entries)

    def __contains__(self, code: object) -> bool:
        key = self._key(code)
        return key is not None and key in self._names

    def __iter__(self) -> Iterator[K]:
        return (code for code, _name in self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        kind = "open" if self.open_list else "closed"
        return f"<CodeTable {self.xsd_type}: {len(self)} codes, {kind}>"


def _codes(xsd_type: str, used_by: tuple[str, ...], *entries: tuple[int, str], open_list: bool = True,
           extensions: tuple[tuple[int, str], ...] = ()) -> CodeTable[int]:
    return CodeTable(xsd_type, entries + extensions, open_list, used_by, frozenset(c for c, _n in extensions))


def _strings(xsd_type: str, used_by: tuple[str, ...], *values: str, open_list: bool) -> CodeTable[str]:
    return CodeTable(xsd_type, tuple((value, value) for value in values), open_list, used_by)


# ------------------------------------------------------------------------------------------------------------
# espi.xsd — usage point, reading type, summaries

SERVICE_KIND = _codes(
    "ServiceKind", ("ServiceCategory.kind",),
    (0, "electricity"), (1, "gas"), (2, "water"), (3, "time"), (4, "heat"), (5, "refuse"), (6, "sewerage"),
    (7, "rates"), (8, "tvLicence"), (9, "internet"),
    # GBA's ESPI 3.3 usage.xsd (shared/espi/xsd/v3.3, "[GBA Extension] Weather service") adds 10; most legacy
    # CMD custodians emit 3.3 (espi.md §1.12), so a 3.3 file may carry it.
    extensions=((10, "weather"),),
)

ACCUMULATION_KIND = _codes(
    "AccumulationKind", ("ReadingType.accumulationBehaviour",),
    (0, "none"), (1, "bulkQuantity"), (2, "continuousCumulative"), (3, "cumulative"), (4, "deltaData"),
    (6, "indicating"), (9, "summation"), (10, "timeDelay"), (12, "instantaneous"), (13, "latchingQuantity"),
    (14, "boundedQuantity"),
)

COMMODITY_KIND = _codes(
    "CommodityKind",
    ("ReadingType.commodity", "ElectricPowerUsageSummary.commodity", "UsageSummary.commodity"),
    (0, "none"), (1, "electricity SecondaryMetered"), (2, "electricity PrimaryMetered"), (3, "communication"),
    (4, "air"), (5, "insulativeGas"), (6, "insulativeOil"), (7, "naturalGas"), (8, "propane"),
    (9, "potableWater"), (10, "steam"), (11, "wasteWater"), (12, "heatingFluid"), (13, "coolingFluid"),
    (14, "nonpotableWater"), (15, "nox"), (16, "so2"), (17, "ch4"), (18, "co2"), (19, "carbon"), (20, "hch"),
    (21, "pfc"), (22, "sf6"), (23, "tvLicence"), (24, "internet"), (25, "refuse"),
    (26, "electricity TransmissionMetered"),
)

#: ISO 4217 numeric codes the schema lists. Other ISO codes are valid too (open list); for the alpha code of
#: any of them use :func:`espi.currency.currency_alpha`, which reads the full ISO table.
CURRENCY = _codes(
    "Currency",
    ("ReadingType.currency", "ElectricPowerUsageSummary.currency", "UsageSummary.currency",
     "cust:CustomerAgreement.currency"),
    (840, "USD"), (978, "EUR"), (36, "AUD"), (124, "CAD"), (756, "CHF"), (156, "CNY"), (208, "DKK"),
    (826, "GBP"), (392, "JPY"), (578, "NOK"), (643, "RUB"), (752, "SEK"), (356, "INR"), (0, "other"),
)

DATA_QUALIFIER_KIND = _codes(
    "DataQualifierKind", ("ReadingType.dataQualifier",),
    (0, "none"), (2, "average"), (4, "excess"), (5, "highThreshold"), (7, "lowThreshold"), (8, "maximum"),
    (9, "minimum"), (11, "nominal"), (12, "normal"), (16, "secondMaximum"), (17, "secondMinimum"),
    (23, "thirdMaximum"), (24, "fourthMaximum"), (25, "fifthMaximum"), (26, "sum"),
)

FLOW_DIRECTION_KIND = _codes(
    "FlowDirectionKind", ("ReadingType.flowDirection",),
    (0, "none"), (1, "forward"), (2, "lagging"), (3, "leading"), (4, "net"), (5, "q1plusQ2"), (7, "q1plusQ3"),
    (8, "q1plusQ4"), (9, "q1minusQ4"), (10, "q2plusQ3"), (11, "q2plusQ4"), (12, "q2minusQ3"),
    (13, "q3plusQ4"), (14, "q3minusQ2"), (15, "quadrant1"), (16, "quadrant2"), (17, "quadrant3"),
    (18, "quadrant4"), (19, "reverse"), (20, "total"), (21, "totalByPhase"),
)

#: powerOfTenMultiplier: actual = value × 10^code (espi.md §1.4). See :func:`multiplier_ok` for sentinels.
UNIT_MULTIPLIER_KIND = _codes(
    "UnitMultiplierKind",
    ("ReadingType.powerOfTenMultiplier", "SummaryMeasurement.powerOfTenMultiplier",
     "cust:SummaryMeasurement.powerOfTenMultiplier"),
    (-12, "p"), (-9, "n"), (-6, "micro"), (-3, "m"), (-2, "c"), (-1, "d"), (3, "k"), (6, "M"), (9, "G"),
    (12, "T"), (0, "none"), (1, "da"), (2, "h"),
)

QUALITY_OF_READING = _codes(
    "QualityOfReading",
    ("ReadingType.defaultQuality", "ElectricPowerUsageSummary.qualityOfReading",
     "UsageSummary.qualityOfReading", "ReadingQuality.quality"),
    (0, "valid"), (7, "manually edited"), (8, "estimated using reference day"),
    (9, "estimated using linear interpolation"), (10, "questionable"), (11, "derived"),
    (12, "projected (forecast)"), (13, "mixed"), (14, "raw"), (15, "normalized for weather"), (16, "other"),
    (17, "validated"), (18, "verified"), (19, "revenue-quality"),
)

#: ReadingType.measuringPeriod — how the value was measured. Older files put these in ``timeAttribute``.
TIME_ATTRIBUTE_KIND = _codes(
    "TimeAttributeKind", ("ReadingType.measuringPeriod",),
    (0, "none"), (1, "tenMinute"), (2, "fifteenMinute"), (3, "oneMinute"), (4, "twentyfourHour"),
    (5, "thirtyMinute"), (6, "fiveMinute"), (7, "sixtyMinute"), (10, "twoMinute"), (14, "threeMinute"),
    (15, "present"), (16, "previous"), (31, "twentyMinute"), (50, "fixedBlock60Min"), (51, "fixedBlock30Min"),
    (52, "fixedBlock20Min"), (53, "fixedBlock15Min"), (54, "fixedBlock10Min"), (55, "fixedBlock5Min"),
    (56, "fixedBlock1Min"), (57, "rollingBlock60MinIntvl30MinSubIntvl"),
    (58, "rollingBlock60MinIntvl20MinSubIntvl"), (59, "rollingBlock60MinIntvl15MinSubIntvl"),
    (60, "rollingBlock60MinIntvl12MinSubIntvl"), (61, "rollingBlock60MinIntvl10MinSubIntvl"),
    (62, "rollingBlock60MinIntvl6MinSubIntvl"), (63, "rollingBlock60MinIntvl5MinSubIntvl"),
    (64, "rollingBlock60MinIntvl4MinSubIntvl"), (65, "rollingBlock30MinIntvl15MinSubIntvl"),
    (66, "rollingBlock30MinIntvl10MinSubIntvl"), (67, "rollingBlock30MinIntvl6MinSubIntvl"),
    (68, "rollingBlock30MinIntvl5MinSubIntvl"), (69, "rollingBlock30MinIntvl3MinSubIntvl"),
    (70, "rollingBlock30MinIntvl2MinSubIntvl"), (71, "rollingBlock15MinIntvl5MinSubIntvl"),
    (72, "rollingBlock15MinIntvl3MinSubIntvl"), (73, "rollingBlock15MinIntvl1MinSubIntvl"),
    (74, "rollingBlock10MinIntvl5MinSubIntvl"), (75, "rollingBlock10MinIntvl2MinSubIntvl"),
    (76, "rollingBlock10MinIntvl1MinSubIntvl"), (77, "rollingBlock5MinIntvl1MinSubIntvl"),
)

#: ReadingType.timeAttribute — the period of interest (billing period, daily…), since ESPI 4.0.
TIME_PERIOD_OF_INTEREST = _codes(
    "TimePeriodOfInterest", ("ReadingType.timeAttribute",),
    (0, "none"), (8, "billingPeriod"), (11, "daily"), (13, "monthly"), (22, "seasonal"), (24, "weekly"),
    (32, "specifiedPeriod"),
)

#: The schema names both 784 and 769 ``S12N`` (769 is what US residential split-phase data uses).
PHASE_CODE_KIND = _codes(
    "PhaseCodeKind", ("ReadingType.phase", "UsagePoint.phaseCode"),
    (225, "ABCN"), (224, "ABC"), (193, "ABN"), (41, "ACN"), (97, "BCN"), (132, "AB"), (96, "AC"), (66, "BC"),
    (129, "AN"), (65, "BN"), (33, "CN"), (128, "A"), (64, "B"), (32, "C"), (16, "N"), (272, "S2N"),
    (784, "S12N"), (528, "S1N"), (256, "S2"), (768, "S12"), (769, "S12N"), (0, "none"), (136, "AtoAv"),
    (72, "BAv"), (40, "CAv"), (17, "NG"), (512, "S1"),
)

#: ReadingType.kind, the full list (common: 12 energy, 37 power, 8 demand, 58 volume, 46 temperature).
MEASUREMENT_KIND = _codes(
    "MeasurementKind", ("ReadingType.kind",),
    (0, "none"), (2, "apparentPowerFactor"), (3, "currency"), (4, "current"), (5, "currentAngle"),
    (6, "currentImbalance"), (7, "date"), (8, "demand"), (9, "distance"), (10, "distortionVoltAmperes"),
    (11, "energization"), (12, "energy"), (13, "energizationLoadSide"), (14, "fan"), (15, "frequency"),
    (16, "Funds"), (17, "ieee1366ASAI"), (18, "ieee1366ASIDI"), (19, "ieee1366ASIFI"), (20, "ieee1366CAIDI"),
    (21, "ieee1366CAIFI"), (22, "ieee1366CEMIn"), (23, "ieee1366CEMSMIn"), (24, "ieee1366CTAIDI"),
    (25, "ieee1366MAIFI"), (26, "ieee1366MAIFIe"), (27, "ieee1366SAIDI"), (28, "ieee1366SAIFI"),
    (31, "lineLosses"), (32, "losses"), (33, "negativeSequence"), (34, "phasorPowerFactor"),
    (35, "phasorReactivePower"), (36, "positiveSequence"), (37, "power"), (38, "powerFactor"),
    (40, "quantityPower"), (41, "sag"), (42, "swell"), (43, "switchPosition"), (44, "tapPosition"),
    (45, "tariffRate"), (46, "temperature"), (47, "totalHarmonicDistortion"), (48, "transformerLosses"),
    (49, "unipedeVoltageDip10to15"), (50, "unipedeVoltageDip15to30"), (51, "unipedeVoltageDip30to60"),
    (52, "unipedeVoltageDip60to90"), (53, "unipedeVoltageDip90to100"), (54, "voltage"), (55, "voltageAngle"),
    (56, "voltageExcursion"), (57, "voltageImbalance"), (58, "volume"), (59, "zeroFlowDuration"),
    (60, "zeroSequence"), (64, "distortionPowerFactor"), (81, "frequencyExcursion"),
    (90, "applicationContext"), (91, "apTitle"), (92, "assetNumber"), (93, "bandwidth"),
    (94, "batteryVoltage"), (95, "broadcastAddress"), (96, "deviceAddressType1"), (97, "deviceAddressType2"),
    (98, "deviceAddressType3"), (99, "deviceAddressType4"), (100, "deviceClass"),
    (101, "electronicSerialNumber"), (102, "endDeviceID"), (103, "groupAddressType1"),
    (104, "groupAddressType2"), (105, "groupAddressType3"), (106, "groupAddressType4"), (107, "ipAddress"),
    (108, "macAddress"), (109, "mfgAssignedConfigurationID"), (110, "mfgAssignedPhysicalSerialNumber"),
    (111, "mfgAssignedProductNumber"), (112, "mfgAssignedUniqueCommunicationAddress"),
    (113, "multiCastAddress"), (114, "oneWayAddress"), (115, "signalStrength"), (116, "twoWayAddress"),
    (117, "signaltoNoiseRatio"), (118, "alarm"), (119, "batteryCarryover"), (120, "dataOverflowAlarm"),
    (121, "demandLimit"), (122, "demandReset"), (123, "diagnostic"), (124, "emergencyLimit"),
    (125, "encoderTamper"), (126, "ieee1366MomentaryInterruption"),
    (127, "ieee1366MomentaryInterruptionEvent"), (128, "ieee1366SustainedInterruption"),
    (129, "interruptionBehaviour"), (130, "inversionTamper"), (131, "loadInterrupt"), (132, "loadShed"),
    (133, "maintenance"), (134, "physicalTamper"), (135, "powerLossTamper"), (136, "powerOutage"),
    (137, "powerQuality"), (138, "powerRestoration"), (139, "programmed"), (140, "pushbutton"),
    (141, "relayActivation"), (142, "relayCycle"), (143, "removalTamper"), (144, "reprogrammingTamper"),
    (145, "reverseRotationTamper"), (146, "switchArmed"), (147, "switchDisabled"), (148, "tamper"),
    (149, "watchdogTimeout"), (150, "billLastPeriod"), (151, "billToDate"), (152, "billCarryover"),
    (153, "connectionFee"), (154, "audibleVolume"), (155, "volumetricFlow"),
)

#: ReadingType.uom (the full list, schema order). Common: 72 Wh, 38 W, 61 VA, 63 VAr, 73 VArh, 169 therm,
#: 42 m3, 119 ft3, 128 usGal, 6 K, 23 degC, 80 money. Names are the schema's identifiers, not typeset symbols
#: (``degC``, ``m3``, ``n`` for newton — lower case in the schema).
UNIT_SYMBOL_KIND = _codes(
    "UnitSymbolKind", ("ReadingType.uom", "SummaryMeasurement.uom", "cust:SummaryMeasurement.uom"),
    (61, "VA"), (38, "W"), (63, "VAr"), (71, "VAh"), (72, "Wh"), (73, "VArh"), (29, "V"), (30, "ohm"),
    (5, "A"), (25, "F"), (28, "H"), (23, "degC"), (27, "sec"), (159, "min"), (160, "h"), (9, "deg"),
    (10, "rad"), (31, "J"), (32, "n"), (53, "siemens"), (0, "none"), (33, "Hz"), (3, "g"), (39, "pa"),
    (2, "m"), (41, "m2"), (42, "m3"), (69, "A2"), (105, "A2h"), (70, "A2s"), (106, "Ah"), (152, "APerA"),
    (103, "APerM"), (68, "As"), (79, "b"), (113, "bm"), (22, "bq"), (132, "btu"), (133, "btuPerH"), (8, "cd"),
    (76, "char"), (75, "HzPerSec"), (114, "code"), (65, "cosTheta"), (111, "count"), (119, "ft3"),
    (120, "ft3compensated"), (123, "ft3compensatedPerH"), (78, "gM2"), (144, "gPerG"), (21, "gy"),
    (150, "HzPerHz"), (77, "charPerSec"), (130, "imperialGal"), (131, "imperialGalPerH"), (51, "jPerK"),
    (165, "jPerKg"), (6, "K"), (158, "kat"), (47, "kgM"), (48, "kgPerM3"), (134, "litre"),
    (157, "litreCompensated"), (138, "litreCompensatedPerH"), (137, "litrePerH"), (143, "litrePerLitre"),
    (82, "litrePerSec"), (156, "litreUncompensated"), (139, "litreUncompensatedPerH"), (35, "lm"), (34, "lx"),
    (49, "m2PerSec"), (167, "m3compensated"), (126, "m3compensatedPerH"), (125, "m3PerH"), (45, "m3PerSec"),
    (166, "m3uncompensated"), (127, "m3uncompensatedPerH"), (118, "meCode"), (7, "mol"), (147, "molPerKg"),
    (145, "molPerM3"), (146, "molPerMol"), (80, "money"), (148, "mPerM"), (46, "mPerM3"), (43, "mPerSec"),
    (44, "mPerSec2"), (102, "ohmM"), (155, "paA"), (140, "paG"), (141, "psiA"), (142, "psiG"), (100, "q"),
    (161, "q45"), (163, "q45h"), (162, "q60"), (164, "q60h"), (101, "qh"), (54, "radPerSec"), (154, "rev"),
    (4, "revPerSec"), (149, "secPerSec"), (11, "sr"), (109, "status"), (24, "sv"), (37, "t"), (169, "therm"),
    (108, "timeStamp"), (128, "usGal"), (129, "usGalPerH"), (67, "V2"), (104, "V2h"), (117, "VAhPerRev"),
    (116, "VArhPerRev"), (74, "VPerHz"), (151, "VPerV"), (66, "Vs"), (36, "wb"), (107, "WhPerM3"),
    (115, "WhPerRev"), (50, "wPerMK"), (81, "WPerSec"), (153, "WPerVA"), (168, "WPerW"),
)

#: LineItem.itemKind. The schema gives no appinfo here; the names are the first sentence of its documentation.
ITEM_KIND = _codes(
    "ItemKind", ("LineItem.itemKind",),
    (1, "Energy Generation Fee"), (2, "Energy Delivery Fee"), (3, "Energy Usage Fee"),
    (4, "Administrative Fee"), (5, "Tax"), (6, "Energy Generation Credit"), (7, "Energy Delivery Credit"),
    (8, "Administrative Credit"), (9, "Payment"), (10, "Information"),
)

AMI_BILLING_READY_KIND = _strings(
    "AmiBillingReadyKind", ("UsagePoint.amiBillingReady",),
    "amiCapable", "amiDisabled", "billingApproved", "enabled", "nonAmi", "nonMetered", "operable",
    open_list=False,
)

USAGE_POINT_CONNECTED_KIND = _strings(
    "UsagePointConnectedKind", ("UsagePoint.connectionState",),
    "connected", "logicallyDisconnected", "physicallyDisconnected",
    open_list=False,
)

APNODE_TYPE = _strings(
    "ApnodeType", ("PnodeRef.apnodeType",),
    "AG", "CPZ", "DPZ", "LAP", "TH", "SYS", "CA", "DCA", "GA", "GH", "EHV", "ZN", "INT", "BUS",
    open_list=False,
)

ANODE_TYPE = _strings(
    "AnodeType", ("AggregateNodeRef.anodeType",),
    "SYS", "RUC", "LFZ", "REG", "AGR", "POD", "ALR", "LTAC", "ACA", "ASR", "ECA",
    open_list=False,
)

#: TariffRiderRef.enrollmentStatus (closed in espi.xsd; the customer.xsd list of the same name is open).
ENROLLMENT_STATUS = _strings(
    "EnrollmentStatus", ("TariffRiderRef.enrollmentStatus",),
    "unenrolled", "enrolled", "enrolledPending",
    open_list=False,
)

TOU_CPP_CONSUMPTION_TIER = _strings(
    "tOUorCPPorConsumptionTier", ("programIdMapping.tOUorCPPorConsumptionTier",),
    "tou", "cpp", "consumptiontier",
    open_list=False,
)

#: Declared in espi.xsd but used by no element; kept so every enumerated schema type has a table.
PARTICIPATION_CATEGORY_MPM = _strings("ParticipationCategoryMPM", (), "Y", "N", "S", "L", open_list=False)

# ------------------------------------------------------------------------------------------------------------
# espi.xsd — batch, service status, OAuth resources (ApplicationInformation, Authorization)

ESPI_SERVICE_STATUS = _codes(
    "ESPIServiceStatus", ("ServiceStatus.currentStatus",),
    (0, "Unavailable"), (1, "Normal"),
)

STATUS_CODE = _codes(
    "StatusCode", ("BatchItemInfo.statusCode", "cust:BatchItemInfo.statusCode"),
    (200, "Ok"), (201, "Created"), (202, "Accepted"), (204, "No Content"), (301, "Moved Permanently"),
    (302, "Redirect"), (304, "Not Modified"), (400, "Bad Request"), (401, "Unauthorized"), (403, "Forbidden"),
    (404, "Not Found"), (405, "Method Not Allowed"), (410, "Gone"), (500, "Internal Server Error"),
)

CRUD_OPERATION = _codes(
    "CRUDOperation", ("BatchItemInfo.operation", "cust:BatchItemInfo.operation"),
    (0, "Create"), (1, "Read"), (2, "Update"), (3, "Delete"),
)

AUTHORIZATION_STATUS = _codes(
    "AuthorizationStatus", ("Authorization.status",),
    (0, "Revoked"), (1, "Active"), (2, "Denied"),
)

DATA_CUSTODIAN_APPLICATION_STATUS = _codes(
    "DataCustodianApplicationStatus", ("ApplicationInformation.dataCustodianApplicationStatus",),
    (1, "Review"), (2, "Production (Live)"), (3, "On Hold"), (4, "Revoked"),
)

#: The schema misspells the type name (``ThirdPartyApplicatonStatus``); ``xsd_type`` keeps its spelling.
THIRD_PARTY_APPLICATION_STATUS = _codes(
    "ThirdPartyApplicatonStatus", ("ApplicationInformation.thirdPartyApplicationStatus",),
    (1, "Development"), (2, "ReviewTest"), (3, "Production"), (4, "Retired"),
)

THIRD_PARTY_APPLICATION_TYPE = _codes(
    "ThirdPartyApplicationType", ("ApplicationInformation.thirdPartyApplicationType",),
    (1, "Web"), (2, "Desktop"), (3, "Mobile"), (4, "Device"),
)

THIRD_PARTY_APPLICATION_USE = _codes(
    "ThirdPartyApplicationUse", ("ApplicationInformation.thirdPartyApplicationUse",),
    (1, "EnergyManagement"), (2, "Comparisons"), (3, "Government"), (4, "Academic"), (5, "LawEnforcement"),
)

GRANT_TYPE = _strings(
    "GrantType", ("ApplicationInformation.grant_types", "Authorization.grant_type"),
    "authorization_code", "client_credentials", "refresh_token",
    open_list=False,
)

#: Pre-2019 data also says ``token`` (espi.md §1.12); it is not in the 4.0 list, so ``name("token")`` is None.
RESPONSE_TYPE = _strings("ResponseType", ("ApplicationInformation.response_types",), "code", open_list=False)

#: The schema is case-sensitive: pre-2019 ``bearer`` is not ``Bearer`` (RFC 6749 ignores case here).
TOKEN_TYPE = _strings("TokenType", ("Authorization.token_type",), "Bearer", open_list=False)

TOKEN_ENDPOINT_METHOD = _strings(
    "TokenEndPointMethod", ("ApplicationInformation.token_endpoint_auth_method",),
    "client_secret_basic",
    open_list=False,
)

OAUTH_ERROR = _strings(
    "OAuthError", ("Authorization.error",),
    "invalid_request", "invalid_client", "invalid_grant", "unauthorized_client", "unsupported_grant_type",
    "invalid_scope", "invalid_redirect_uri", "invalid_client_metadata", "invalid_client_id", "access_denied",
    "unsupported_response_type", "server_error", "temporarily_unavailable",
    open_list=False,
)

# ------------------------------------------------------------------------------------------------------------
# customer.xsd (namespace http://naesb.org/espi/customer) — string lists, espi.md §1.11. Currency, StatusCode,
# CRUDOperation, UnitMultiplierKind and UnitSymbolKind are the lists of espi.xsd and share the tables above.

CUSTOMER_KIND = _strings(
    "CustomerKind", ("cust:Customer.kind",),
    "residential", "residentialAndCommercial", "residentialAndStreetlight", "residentialStreetlightOthers",
    "residentialFarmService", "commercialIndustrial", "pumpingLoad", "windMachine", "energyServiceSupplier",
    "energyServiceScheduler", "enterprise", "regionalOperator", "subsidiary", "internalUse", "other",
    open_list=True,
)

SUPPLIER_KIND = _strings(
    "SupplierKind", ("cust:ServiceSupplier.kind",),
    "utility", "retailer", "other", "lse", "mdma", "msp",
    open_list=True,
)

#: Declared in customer.xsd but used by no element.
REVENUE_KIND = _strings(
    "RevenueKind", (),
    "residential", "nonResidential", "commercial", "industrial", "irrigation", "streetLight", "other",
    open_list=True,
)

NOTIFICATION_METHOD_KIND = _strings(
    "NotificationMethodKind", ("cust:AccountNotification.methodKind",),
    "call", "email", "letter", "other", "ivr",
    open_list=True,
)

METER_MULTIPLIER_KIND = _strings(
    "MeterMultiplierKind", ("cust:MeterMultiplier.kind",),
    "kH", "transformerRatio", "kR", "kE", "ctRatio", "ptRatio",
    open_list=True,
)

PROGRAM_DATE_KIND = _strings(
    "ProgramDateKind", ("cust:ProgramDateIdMapping.programDateType",),
    "CUST_DR_PROGRAM_ENROLLMENT_DATE", "CUST_DR_PROGRAM_DE_ENROLLMENT_DATE",
    "CUST_DR_PROGRAM_TERM_DATE_REGARDLESS_FINANCIAL", "CUST_DR_PROGRAM_TERM_DATE_WITHOUT_FINANCIAL",
    open_list=True,
)

MEDIA_TYPE = _strings(
    "MediaType", ("cust:StatementRef.mediaType",),
    "application/json", "application/pdf", "application/vnd.ms-excel",
    "application/vnd.oasis.opendocument.spreadsheet", "application/vnd.oasis.opendocument.text",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "application/zip", "image/gif",
    "image/jpeg", "image/png", "text/csv", "text/html", "text/plain", "text/rtf", "text/xml",
    open_list=True,
)

#: DemandResponseProgram.enrollmentStatus — open in customer.xsd, unlike espi's :data:`ENROLLMENT_STATUS`.
CUSTOMER_ENROLLMENT_STATUS = _strings(
    "EnrollmentStatus", ("cust:DemandResponseProgram.enrollmentStatus",),
    "unenrolled", "enrolled", "enrolledPending",
    open_list=True,
)

#: The customer schema's ServiceKind is a closed *string* list, declared but unused — not espi's numeric one.
CUSTOMER_SERVICE_KIND = _strings(
    "ServiceKind", (),
    "electricity", "gas", "water", "time", "heat", "refuse", "sewerage", "rates", "tvLicence", "internet",
    "other",
    open_list=False,
)

# ------------------------------------------------------------------------------------------------------------
# Registries


def _registry(*tables: CodeTable) -> Mapping[str, CodeTable]:
    return MappingProxyType({table.xsd_type: table for table in tables})


#: Every enumerated simpleType of espi.xsd, by schema type name.
ESPI_TABLES: Mapping[str, CodeTable] = _registry(
    SERVICE_KIND, ACCUMULATION_KIND, COMMODITY_KIND, CURRENCY, DATA_QUALIFIER_KIND, FLOW_DIRECTION_KIND,
    UNIT_MULTIPLIER_KIND, QUALITY_OF_READING, TIME_ATTRIBUTE_KIND, TIME_PERIOD_OF_INTEREST, PHASE_CODE_KIND,
    MEASUREMENT_KIND, UNIT_SYMBOL_KIND, ITEM_KIND, AMI_BILLING_READY_KIND, USAGE_POINT_CONNECTED_KIND,
    APNODE_TYPE, ANODE_TYPE, ENROLLMENT_STATUS, TOU_CPP_CONSUMPTION_TIER, PARTICIPATION_CATEGORY_MPM,
    ESPI_SERVICE_STATUS, STATUS_CODE, CRUD_OPERATION, AUTHORIZATION_STATUS, DATA_CUSTODIAN_APPLICATION_STATUS,
    THIRD_PARTY_APPLICATION_STATUS, THIRD_PARTY_APPLICATION_TYPE, THIRD_PARTY_APPLICATION_USE, GRANT_TYPE,
    RESPONSE_TYPE, TOKEN_TYPE, TOKEN_ENDPOINT_METHOD, OAUTH_ERROR,
)

#: Every enumerated simpleType of customer.xsd, by schema type name.
CUSTOMER_TABLES: Mapping[str, CodeTable] = _registry(
    CUSTOMER_KIND, SUPPLIER_KIND, REVENUE_KIND, NOTIFICATION_METHOD_KIND, METER_MULTIPLIER_KIND,
    PROGRAM_DATE_KIND, MEDIA_TYPE, CUSTOMER_ENROLLMENT_STATUS, CUSTOMER_SERVICE_KIND, CURRENCY, STATUS_CODE,
    CRUD_OPERATION, UNIT_MULTIPLIER_KIND, UNIT_SYMBOL_KIND,
)

#: ReadingType element name → its table (``READING_TYPE_CODES["uom"] is UNIT_SYMBOL_KIND``), for code that
#: walks a ReadingType generically (e.g. to keep every raw code and its name).
READING_TYPE_CODES: Mapping[str, CodeTable] = MappingProxyType({
    use.partition(".")[2]: table
    for table in ESPI_TABLES.values()
    for use in table.used_by
    if use.startswith("ReadingType.")
})

# ------------------------------------------------------------------------------------------------------------
# Sentinels and sanity limits (mapping-notes §3.4). GBA test-plan data fills "not set" fields with extreme
# values (sdk_testplan_1hrLP_32Days_Additional_M.xml: multiplier 4096, uom 65535, value/amount −2⁴⁷,
# timeStamp 2³¹−1); scaling by 10^4096 or dating a reading to 2038 would be garbage, so the translator treats
# them as absent.

#: powerOfTenMultiplier bound: SI prefixes span 10^-24 (yocto) … 10^24 (yotta); beyond that it is no scale.
MULTIPLIER_LIMIT = 24
#: powerOfTenMultiplier meaning "not set" in GBA test-plan data.
MULTIPLIER_SENTINEL = 4096
#: UInt16 maximum, used in code fields (uom) for "not set".
CODE_SENTINEL = 65535
#: Int48 minimum, used in value/cost/amount fields for "not set".
INT48_SENTINEL = -(2**47)
#: Int32 maximum (2038-01-19T03:14:07Z), used in TimeType fields for "not set".
TIME_SENTINEL = 2**31 - 1


def _plain_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def multiplier_ok(p: object) -> bool:
    """True when ``p`` is a usable powerOfTenMultiplier: an integer within ±:data:`MULTIPLIER_LIMIT`.

    False for :data:`MULTIPLIER_SENTINEL` (4096), anything else out of range, and non-integers; the caller
    then treats the multiplier as absent (0) and warns, as mapping-notes §3.4 prescribes.
    """
    return _plain_int(p) and -MULTIPLIER_LIMIT <= p <= MULTIPLIER_LIMIT


def is_code_sentinel(code: object) -> bool:
    """True for the UInt16 "not set" code (65535) in a code field such as ``uom``."""
    return _plain_int(code) and code == CODE_SENTINEL


def is_value_sentinel(value: object) -> bool:
    """True for the Int48 "not set" value (−2⁴⁷) in ``value``, ``cost``, ``amount``…"""
    return _plain_int(value) and value == INT48_SENTINEL


def is_time_sentinel(seconds: object) -> bool:
    """True for the TimeType "not set" instant 2147483647 (epoch seconds) in ``timeStamp``, ``dateTime``…"""
    return _plain_int(seconds) and seconds == TIME_SENTINEL
