"""The Green Button Function Block catalogue: what the numbers in a scope's ``FB=`` term stand for.

A scope string names capabilities only by number (``FB=1_3_4_5_13_14_39``). Operators, logs and the CLI need
the names, and the gateway needs to know which blocks are mandatory or retail-customer (PII) ones, so the
catalogue is kept here as data.
 Source: the GBA function-blocks list (greenbuttonalliance.org/function-blocks and /cmd-function-blocks, with
the per-block pages /fbNN) as summarised in espi.md §5.2; numbering conflicts between GBA, the CMD test
harness and the test workbook are from espi.md §5.3. GBA's list is canonical. Numbers other sources use
differently are described in ``NUMBERING_NOTES`` rather than silently remapped, because no source publishes a
one-to-one mapping.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType


class Certification(StrEnum):
    """How a Function Block stands in GBA certification (the "cert." column of espi.md §5.2)."""

    MANDATORY = "mandatory"  # both Connect My Data and Download My Data
    CMD_MANDATORY = "cmd-mandatory"  # mandatory for Connect My Data certification only
    DMD_MANDATORY = "dmd-mandatory"  # mandatory for Download My Data certification only
    OPTIONAL = "optional"
    LEGACY = "legacy"  # defined earlier or by test tooling, not in GBA's current list
    RESERVED = "reserved"
    TEST_PLAN = "test-plan"  # a bucket the test plans use, not a capability


#: Retail-customer (PII, ``customer.xsd``) Function Blocks in GBA numbering.
RETAIL_CUSTOMER_RANGE = range(51, 71)

_SAME_FLOW = (
    "FB_14 (pre-negotiated scope) and FB_31 (scope chosen during authorization) are the same OAuth flow; "
    "GBA lists FB_31 as CMD-mandatory, the harness runs the same cases for both and marks FB_31 [FUTURE]."
)
_MANAGE_SWAP = (
    "The CMD harness and the 2019 test workbook swap 41 and 44: there FB_41 is 'Manage Authorization "
    "Resource' (MGA001-003) and FB_44 'Manage ApplicationInformation Resource' (MGT001-003). Treat 41/44 "
    "together as 'manage ApplicationInformation/Authorization'."
)
_HARNESS_RETAIL = (
    "Not in GBA's list. The CMD harness uses [FB_46]-[FB_50] for its [FUTURE] retail-customer suites; GBA "
    "numbers retail customer 51-70, with no published mapping between the two."
)

#: Numbers that mean different things in different sources (espi.md §5.3). Kept as prose for people: none of
#: these has a published mapping that code could apply safely.
NUMBERING_NOTES: Mapping[int, str] = MappingProxyType(
    {
        14: _SAME_FLOW,
        23: "Was numbered FB_46 before 2015 (energyos/OpenESPI-GreenbuttonDataSDK PR #52).",
        31: _SAME_FLOW,
        41: _MANAGE_SWAP,
        44: _MANAGE_SWAP,
        46: _HARNESS_RETAIL + " FB_46 was also the pre-2015 number of FB_23 Third Party OAuth.",
        47: _HARNESS_RETAIL,
        48: _HARNESS_RETAIL,
        49: _HARNESS_RETAIL,
        50: _HARNESS_RETAIL + " GBA's openapi-starter (2026) labels [FB_50]-[FB_57] Customer … Statement, "
        "which matches no other source.",
    }
)


@dataclass(frozen=True, slots=True)
class FunctionBlock:
    """One entry of GBA's Function Block list: ``number`` as written in ``FB=``, its short ``name``."""

    number: int
    name: str
    certification: Certification
    #: Why this number may mean something else in other sources (``NUMBERING_NOTES``), or None.
    note: str | None = None

    @property
    def retail_customer(self) -> bool:
        """True for the retail-customer (PII) blocks, whose data comes from ``customerResourceURI``."""
        return self.number in RETAIL_CUSTOMER_RANGE


_M = Certification.MANDATORY
_CMD = Certification.CMD_MANDATORY
_DMD = Certification.DMD_MANDATORY
_OPT = Certification.OPTIONAL
_LEG = Certification.LEGACY

_CATALOGUE: tuple[tuple[int, str, Certification], ...] = (
    (1, "Usage Data Common", _M),
    (2, "Usage Data Download My Data", _DMD),
    (3, "Usage Data Connect My Data", _CMD),
    (4, "Interval Metering", _M),
    (5, "Electricity Interval Metering", _OPT),
    (6, "Demand Electricity Metering", _OPT),
    (7, "Net Electricity Metering", _OPT),
    (8, "Forward and Reverse Electricity Metering", _OPT),
    (9, "Register Values Electricity Metering", _OPT),
    (10, "Natural Gas Interval Metering", _OPT),
    (11, "Water Interval Metering", _OPT),
    (12, "Cost of Interval Data", _OPT),
    (13, "Energy Usage Security and Privacy Classes", _CMD),
    (14, "Authorization and Authentication with Pre-Negotiated Scope", _LEG),
    (15, "Usage Summary", _OPT),
    (16, "Usage Summary with Cost", _OPT),
    (17, "Electricity Power Quality Summary", _OPT),
    (18, "Multiple UsagePoints", _LEG),
    (19, "Partial Update Data", _LEG),
    (20, "Third Party Common Data Processing", _LEG),
    (22, "Third Party Security and Privacy", _LEG),
    (23, "Third Party OAuth", _LEG),
    (27, "Usage Summary with Demands and Previous Day Attributes", _OPT),
    (28, "Usage Summary Costs for Current Billing Period", _OPT),
    (29, "Temperature Interval Metering", _OPT),
    (30, "Usage Data Common User Experience", _DMD),
    (31, "Usage Data Authorization and Authentication without Pre-Negotiated Scope", _CMD),
    (32, "Resource Level REST", _LEG),
    (33, "Management REST Services", _LEG),
    (34, "SFTP for Usage Data Bulk", _OPT),
    (35, "REST for Usage Data Bulk", _OPT),
    (36, "Third Party Dynamic Registration", _LEG),
    (37, "Usage Data Query Parameters", _CMD),
    (38, "On Demand Requests", _LEG),
    (39, "Usage Data PUSH Model", _CMD),
    (40, "Usage Data Offline Authorization", _OPT),
    (41, "Manage ApplicationInformation Resource", _OPT),
    (44, "Manage Authorization Resource", _OPT),
    # Unnamed by GBA; only seen as the scope of OpenESPI's upload client (``FB=45``).
    (45, "Upload", _LEG),
    (51, "Retail Customer Common", _M),
    (52, "Retail Customer Download My Data", _DMD),
    (53, "Retail Customer Connect My Data", _CMD),
    (54, "Retail Customer Basic Information", _OPT),
    (55, "Retail Customer Demographic Information", _OPT),
    (56, "Retail Customer Billing Information", _OPT),
    (57, "Retail Customer Account-Agreement Information", _OPT),
    (58, "Retail Customer Service-Location Information", _OPT),
    (59, "Retail Customer Service-Supplier Information", _OPT),
    (60, "Retail Customer Meter Information", _OPT),
    (61, "Retail Customer End-Device Information", _OPT),
    (62, "Retail Customer Program-Date-ID-Mappings Information", _OPT),
    (63, "Retail Customer Common User Experience", _DMD),
    (64, "Retail Customer Security and Privacy Class", _CMD),
    (65, "Retail Customer Authorization and Authentication without Pre-Negotiated Scope", _CMD),
    (66, "SFTP for Retail Customer Bulk", _OPT),
    (67, "REST for Retail Customer Bulk", _OPT),
    # Listed only on /cmd-function-blocks.
    (68, "Reserved", Certification.RESERVED),
    (69, "Retail Customer PUSH Model", _CMD),
    (70, "Retail Customer Offline Authorization", _OPT),
    # The test plans file optional data-element checks here; it is not a capability a scope can grant.
    (99, "Optional Data Elements (test plan)", Certification.TEST_PLAN),
)

#: number → FunctionBlock, in number order. Numbers GBA never assigned (21, 24-26, 42, 43, 46-50, …) are
#: absent.
FUNCTION_BLOCKS: Mapping[int, FunctionBlock] = MappingProxyType(
    {
        number: FunctionBlock(number, name, certification, NUMBERING_NOTES.get(number))
        for number, name, certification in _CATALOGUE
    }
)


def function_block(number: int) -> FunctionBlock | None:
    """The catalogue entry for ``number``, or None when GBA's list has no such Function Block."""
    return FUNCTION_BLOCKS.get(number)


def numbering_note(number: int) -> str | None:
    """What other sources mean by ``number`` where they differ from GBA (also for numbers GBA never used)."""
    return NUMBERING_NOTES.get(number)
