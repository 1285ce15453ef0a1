"""Translating one Green Button document into CDS WG3-01 objects (docs/mapping.md is the full table).

``translate(source, options)`` reads the document once, streaming: IntervalBlocks go to a scratch SQLite file,
and so do summary entries (one per UsagePoint and billing period: they grow with the years a document covers);
everything else (UsagePoints, ReadingTypes, customer data: small) stays in memory and forms the link graph. Then it
builds the small objects (service points, meter devices, accounts, service contracts, statements) eagerly, the bill
sections UsagePoint by UsagePoint into the scratch file, and the usage segments lazily, UsagePoint by UsagePoint, so
that memory stays flat however many readings and billing periods the file holds. Use the result as a context
manager: closing it deletes the scratch file (usage segments and bill sections are read from it).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bridge.from_espi import billing
from bridge.from_espi.billing import StatementPolicy
from bridge.from_espi.customer import CustomerObjects, translate_customer
from bridge.from_espi.segments import (
    SectionWindow,
    Segmenter,
    Series,
    StagedBlock,
    UsagePointContext,
    local_date,
    rfc3339,
)
from bridge.from_espi.staging import BlockStaging
from bridge.from_espi.usage_points import (
    service_point,
    synthetic_account,
    synthetic_meter_device,
    synthetic_service_contract,
    usage_point_commodity,
)
from bridge.from_espi.value_formats import CUMULATIVE_ACCUMULATIONS, FLOW_NET, SeriesFormat, classify
from cds.ids import IdFactory
from espi.atom import BARE_DOCUMENTS, BlockRead, Entry, FeedReader
from espi.errors import EspiError, NoUsageDataError
from espi.feed import SUMMARY_KINDS, BlockEntryHeader, FeedGraph, UsagePointNode
from espi.intervals import IntervalBlock
from espi.local_time import LocalTimeError, LocalTimeParameters, zone_for
from espi.model import Diagnostics
from espi.usage import DateTimeInterval, ElectricPowerQualitySummary, UsageSummary
from espi.xmlsafe import Source

#: A development default so that ids are stable run to run; deployments set their own secret.
DEFAULT_ID_SECRET = "greenbridge-development-id-secret"
USAGE_KINDS = frozenset({"UsagePoint", "MeterReading", "UsageSummary", "ElectricPowerUsageSummary",
                         "ElectricPowerQualitySummary"})
CUSTOMER_KINDS = frozenset({"Customer", "RetailCustomer", "CustomerAccount", "CustomerAgreement",
                            "ServiceLocation", "ServiceSupplier", "Meter", "EndDevice", "Statement"})
LISTINGS = ("usage_segments", "service_points", "meter_devices", "bill_sections", "bill_statements", "accounts",
            "service_contracts")
QUALITY_SUMMARY = "ElectricPowerQualitySummary"
ACCUMULATION_NAMES = {1: "bulkQuantity", 2: "continuousCumulative", 3: "cumulative", 9: "summation"}


class TranslationError(EspiError):
    """The options are unusable (e.g. an unknown time zone)."""


@dataclass(slots=True)
class TranslateOptions:
    """How to translate. Defaults suit a one-off translation; the gateway sets them per custodian."""

    #: HMAC key of the ids (never rotate it in a deployment: it names every object)
    id_secret: bytes | str = DEFAULT_ID_SECRET
    #: the custodian's configured key (part of every id)
    custodian: str = "default"
    #: IANA zone for local days and dates; None: the feed's LocalTimeParameters when sane, else UTC
    timezone: str | None = None
    #: scope of href-based natural keys (a subscription or customer id); None: unscoped
    subscription: str | None = None
    #: "auto" (urn:uuid ids when every entry has a unique one, else hrefs), "uuid" or "href" (D13)
    key_strategy: str = "auto"
    #: ISO 4217 alpha code for costs whose ReadingType names no currency
    default_currency: str | None = None
    #: the custodian as a CDS Entity (id, types, entity_number, entity_name, entity_abbreviation)
    entity: dict[str, Any] | None = None
    #: the gateway clock for cds_created/cds_modified/cds_synced (None: now)
    now: datetime | None = None
    #: where a register (bulkQuantity) reading is placed: "end" or "start" of its ESPI period (D6)
    register_read_at: str = "end"
    #: utility mode for bill statements (D7); None: no statements
    statements: StatementPolicy | None = None
    #: custodian table of ESPI tou codes → CDS tou values (super_peak, peak, partial_peak, off_peak…)
    tou_names: dict[int, str] = field(default_factory=dict)
    #: region for phone numbers without a country code (ISO 3166 alpha-2)
    phone_region: str | None = "US"
    #: where the scratch file goes (None: the system temp directory)
    scratch_dir: str | None = None
    #: the URL CDS ``documentation`` fields point to for programs greenbridge describes (the gateway serves
    #: docs/mapping.md under its public URL; this placeholder domain never resolves)
    documentation_url: str = "https://greenbridge.invalid/docs/mapping.md"

    def __post_init__(self) -> None:
        if self.key_strategy not in ("auto", "uuid", "href"):
            raise TranslationError(f"key strategy must be auto, uuid or href, not {self.key_strategy!r}")
        if self.register_read_at not in ("start", "end"):
            raise TranslationError(f"register_read_at must be start or end, not {self.register_read_at!r}")
        if self.timezone is not None:
            try:
                ZoneInfo(self.timezone)
            except (ZoneInfoNotFoundError, ValueError):
                raise TranslationError(f"unknown time zone {self.timezone!r} (expected an IANA name such as "
                                       "America/New_York)") from None


@dataclass(slots=True)
class _UsagePointPlan:
    """The CDS ids and series of one UsagePoint, decided before its segments are built (and nothing of the link
    graph: the graph is freed once the small objects are built). What grows with its billing periods (bill section
    windows, billing pseudo-series, power quality segments) waits in the scratch file (``_UsagePointPeriods``)."""

    key: str
    zone: tzinfo
    account_id: str
    contract_ids: list[str]
    servicepoint_id: str
    meterdevice_id: str
    series: dict[int, Series]


@dataclass(slots=True)
class _UsagePointPeriods:
    """What the segments of one UsagePoint need from its summaries; staged, and read back one UsagePoint at a time."""

    sections: list[SectionWindow] = field(default_factory=list)
    #: the billing values' pseudo-series (D11), in the order they were made
    pseudo_series: list[Series] = field(default_factory=list)
    #: power quality segments (FB_17), emitted after the UsagePoint's other segments
    extra_segments: list[dict[str, Any]] = field(default_factory=list)


class _DocumentFacts:
    """What the checks and the key strategy need from every entry, gathered while reading (O(kinds), not
    O(entries): the entries' ids go to the scratch file)."""

    def __init__(self, staging: BlockStaging, check_ids: bool):
        self.staging = staging
        self.kinds: Counter[str] = Counter()
        self.keyed = 0
        self.all_uuid = check_ids

    def add(self, entry: Entry) -> None:
        self.kinds.update(r.name for r in entry.resources)
        if not any(r.name in USAGE_KINDS or r.name in CUSTOMER_KINDS or r.name == "ReadingType"
                   for r in entry.resources):
            return
        self.keyed += 1
        if self.all_uuid:
            if entry.id and entry.id.lower().startswith("urn:uuid:"):
                self.staging.add_entry_id(entry.id.lower())
            else:
                self.all_uuid = False

    def uuid_keys(self) -> bool:
        """Every keyed entry has a urn:uuid id, and no two the same (D13 "auto")."""
        return self.keyed > 0 and self.all_uuid and self.staging.entry_ids_unique()


class _StagedSummaryGraph(FeedGraph):
    """The link graph, with the summary entries left in the scratch file: they are resolved from their links in
    FeedGraph's order, and only their UsagePoint is recorded (``BlockStaging.summaries_of`` reads them back)."""

    def __init__(self, entries: list[Entry], diagnostics: Diagnostics, staging: BlockStaging):
        self._staging = staging
        #: UsagePoints that have a UsageSummary (or ElectricPowerUsageSummary); with any summary at all
        self.summary_usage_points: set[int] = set()
        self.summarised_usage_points: set[int] = set()
        self.has_summaries = False
        super().__init__(entries, diagnostics)

    def _attach_summaries(self) -> None:
        def assignments() -> Iterator[tuple[int, str, int]]:
            for kind in SUMMARY_KINDS:
                for header in self._staging.summary_headers(kind):
                    up = self._usage_point_for(header, kind)
                    self.has_summaries = True
                    self.summarised_usage_points.add(up.index)
                    if kind != QUALITY_SUMMARY:
                        self.summary_usage_points.add(up.index)
                    yield up.index, kind, header.seq

        self._staging.assign_summaries(assignments())


#: why a reading of the document is in no usage segment, in the order reports list them (docs/mapping.md §4.11)
NOT_PLACED_REASONS = {
    "no ReadingType": "without a ReadingType (no units)",
    "no start": "without a start (no timePeriod start, no block interval start)",
    "no duration": "without a duration (0 or absent, and no ReadingType intervalLength)",
    "no-time placeholder start": "starting at the 2147483647 'no time' placeholder",
    "superseded": "replaced by a newer reading of the same slot",
}


@dataclass(frozen=True, slots=True)
class ReadingAccount:
    """Every reading of a document accounted for (docs/mapping.md §4.11): read = placed + Σ not placed by
    reason, overall and for the readings that carry a value. Anything left over is a reading lost for a reason the
    translator cannot name: a bug, which ``greenbridge translate`` refuses to pass over (exit status 3)."""

    read: int
    read_with_values: int
    placed: int
    placed_with_values: int
    #: reason (a key of NOT_PLACED_REASONS) → readings, and those of them with a value
    not_placed: dict[str, int]
    not_placed_with_values: dict[str, int]
    #: readings of duration 0 that took their ReadingType's intervalLength (placed, counted for the record)
    duration_zero_stretched: int = 0
    #: IntervalBlock entries whose self and up links named different MeterReadings (placed by self)
    link_conflicts: int = 0
    #: series labelled cumulative whose values do not climb, read as interval data
    series_read_as_interval_data: int = 0

    @property
    def unaccounted(self) -> int:
        return self.read - self.placed - sum(self.not_placed.values())

    @property
    def unaccounted_with_values(self) -> int:
        return self.read_with_values - self.placed_with_values - sum(self.not_placed_with_values.values())

    def summary(self) -> str:
        """One line: ``N readings read, M placed; not placed: 2 without a start, …``."""
        line = f"{self.read} readings read, {self.placed} placed"
        reasons = [f"{count} {NOT_PLACED_REASONS[reason]}" for reason, count in self.not_placed.items() if count]
        if self.unaccounted:
            reasons.append(f"{self.unaccounted} for no reason the translator can name "
                           f"({self.unaccounted_with_values} with values)")
        if reasons:
            line += "; not placed: " + ", ".join(reasons)
        repairs = []
        if self.duration_zero_stretched:
            repairs.append(f"{self.duration_zero_stretched} of duration 0 took their ReadingType's intervalLength")
        if self.link_conflicts:
            repairs.append(f"{self.link_conflicts} IntervalBlock entries with conflicting self and up links placed by "
                           "self")
        if self.series_read_as_interval_data:
            repairs.append(f"{self.series_read_as_interval_data} series labelled cumulative read as interval data")
        if repairs:
            line += "; " + ", ".join(repairs)
        return line

    def as_dict(self) -> dict[str, Any]:
        return {"read": self.read, "read_with_values": self.read_with_values, "placed": self.placed,
                "placed_with_values": self.placed_with_values, "not_placed": dict(self.not_placed),
                "not_placed_with_values": dict(self.not_placed_with_values),
                "unaccounted": self.unaccounted, "unaccounted_with_values": self.unaccounted_with_values,
                "duration_zero_stretched": self.duration_zero_stretched, "link_conflicts": self.link_conflicts,
                "series_read_as_interval_data": self.series_read_as_interval_data}


class Translation:
    """The CDS objects of one document. Small listings are lists; ``usage_segments()`` and ``iter_bill_sections()``
    stream from the scratch file (``bill_sections`` reads them all into a list), only while the translation is
    open."""

    def __init__(self) -> None:
        self.service_points: list[dict[str, Any]] = []
        self.meter_devices: list[dict[str, Any]] = []
        self.accounts: list[dict[str, Any]] = []
        self.service_contracts: list[dict[str, Any]] = []
        self.bill_statements: list[dict[str, Any]] = []
        self._bill_section_count = 0
        self.source = ""
        self.root = ""
        self.key_strategy = ""
        self.reading_count = 0
        self.readings_with_values = 0
        self.untranslated_readings = 0
        #: the ``self`` hrefs of the document's UsagePoint entries (what the data covers; never part of the output)
        self.usage_point_hrefs: tuple[str, ...] = ()
        self.untranslated_readings_with_values = 0
        self.link_conflicts = 0
        self.series_read_as_interval_data = 0
        self.notes: list[str] = []
        self.diagnostics = None
        self._staging: BlockStaging | None = None
        self._plans: dict[int, _UsagePointPlan] = {}
        self._ids: IdFactory | None = None
        self._stamp = ""
        self._has_blocks: set[int] = set()
        self._tou_names: dict[int, str] = {}
        self.segment_stats: Counter[str] = Counter()
        self._accounting: Counter[str] = Counter()
        self._segments_done = False

    def __enter__(self) -> Translation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._staging is not None:
            self._staging.close()
            self._staging = None

    def listing(self, name: str) -> list[dict[str, Any]] | Iterator[dict[str, Any]]:
        if name == "usage_segments":
            return self.usage_segments()
        if name == "bill_sections":
            return self.iter_bill_sections()
        if name not in LISTINGS:
            raise KeyError(name)
        return getattr(self, name)

    @property
    def bill_sections(self) -> list[dict[str, Any]]:
        """The bill sections, by start date (read from the scratch file: only while the translation is open)."""
        return list(self.iter_bill_sections())

    def iter_bill_sections(self) -> Iterator[dict[str, Any]]:
        """The bill sections, streamed by start date and id (re-iterable while the translation is open)."""
        if self._staging is None:
            if not self._bill_section_count:
                return
            raise RuntimeError("the translation is closed")
        for _row, section in self._staging.bill_sections():
            yield section

    def reading_account(self) -> ReadingAccount:
        """Where every reading went (docs/mapping.md §4.11); complete once ``usage_segments()`` has been read to its
        end (RuntimeError before)."""
        if not self._segments_done:
            raise RuntimeError("the reading account is complete only after usage_segments() has been read through")
        accounting = self._accounting
        not_placed = {"no ReadingType": self.untranslated_readings}
        not_placed_values = {"no ReadingType": self.untranslated_readings_with_values}
        for reason in list(NOT_PLACED_REASONS)[1:]:
            not_placed[reason] = accounting[reason]
            not_placed_values[reason] = accounting[f"{reason} with values"]
        return ReadingAccount(
            read=self.reading_count, read_with_values=self.readings_with_values, placed=accounting["placed"],
            placed_with_values=accounting["placed with values"], not_placed=not_placed,
            not_placed_with_values=not_placed_values,
            duration_zero_stretched=accounting["duration 0 read as intervalLength"],
            link_conflicts=self.link_conflicts, series_read_as_interval_data=self.series_read_as_interval_data)

    def usage_segments(self) -> Iterator[dict[str, Any]]:
        """The usage segments, UsagePoint by UsagePoint in time order (re-iterable while the translation is open;
        each complete pass leaves its statistics and reading account)."""
        if self._staging is None:
            if not self._plans:
                self._segments_done = True
                return
            raise RuntimeError("the translation is closed")
        self._segments_done = False
        self.segment_stats = Counter()
        self._accounting = Counter()
        plans = self._plans
        current: Segmenter | None = None
        current_index = None
        periods = _UsagePointPeriods()
        for usage_point, series, lower_bound, updated, seq, index, block in self._staging.blocks_by_usage_point():
            if usage_point != current_index:
                if current is not None:
                    yield from self._finish(current, current_index, periods)
                current_index = usage_point
                periods = self._periods(usage_point)
                current = self._segmenter(plans[usage_point], periods)
            yield from current.flush_before(lower_bound)
            current.add(StagedBlock(series, lower_bound, (updated, seq, index), block))
        if current is not None:
            yield from self._finish(current, current_index, periods)
        for index in sorted(set(plans) - self._has_blocks):  # UsagePoints without readings: their extra segments
            yield from self._periods(index).extra_segments
        self._segments_done = True

    def _periods(self, usage_point: int) -> _UsagePointPeriods:
        periods = self._staging.usage_point_data(usage_point)
        return periods if periods is not None else _UsagePointPeriods()

    def _segmenter(self, plan: _UsagePointPlan, periods: _UsagePointPeriods) -> Segmenter:
        series = dict(plan.series)
        series.update((pseudo.index, pseudo) for pseudo in periods.pseudo_series)
        context = UsagePointContext(
            key=plan.key, zone=plan.zone, series=series, account_ids=[plan.account_id],
            servicecontract_ids=plan.contract_ids, servicepoint_ids=[plan.servicepoint_id],
            meterdevice_ids=[plan.meterdevice_id], meterdevice_id=plan.meterdevice_id,
            bill_sections=periods.sections, tou_names=self._tou_names)
        return Segmenter(context, self._ids, self._stamp, warn=self.notes.append)

    def _finish(self, segmenter: Segmenter, index: int, periods: _UsagePointPeriods) -> Iterator[dict[str, Any]]:
        yield from segmenter.flush_before(None)
        for series in segmenter.context.series.values():
            series.format.clear_cache()  # value objects of a finished UsagePoint are not needed again
        self.segment_stats["readings"] += segmenter.readings
        self.segment_stats["dropped"] += segmenter.dropped
        self.segment_stats["collisions"] += segmenter.collisions
        self._accounting.update(segmenter.accounting)  # reported by reading_account(), not as notes
        yield from periods.extra_segments


def translate(source: Source, options: TranslateOptions | None = None, name: str | None = None,
              on_read: Callable[[int], None] | None = None) -> Translation:
    """Reads and translates one Green Button document (see the module docstring)."""
    options = options or TranslateOptions()
    reader = FeedReader(source, name=name, on_read=on_read)
    staging = BlockStaging(options.scratch_dir)
    result = Translation()
    try:
        entries: list[Entry] = []
        facts = _DocumentFacts(staging, check_ids=options.key_strategy == "auto")
        for item in reader:
            if isinstance(item, BlockRead):
                staging.add_block(item.entry_seq, item.index, item.block)
                continue
            if item.block_count:
                staging.add_block_entry(BlockEntryHeader.of(item))
            if item.resources:
                facts.add(item)
                if any(r.name in SUMMARY_KINDS for r in item.resources):
                    staging.add_summary_entry(item)
                    if all(r.name in SUMMARY_KINDS for r in item.resources):
                        continue  # the graph resolves it from the scratch file
                entries.append(item)
        staging.finish_reading()
        result.source = reader.diagnostics.source
        result.root = reader.root or ""
        result.diagnostics = reader.diagnostics
        result.reading_count = reader.reading_count
        result.readings_with_values = reader.readings_with_values
        _check_has_data(reader, facts.kinds, staging)
        graph = _StagedSummaryGraph(entries, reader.diagnostics, staging)
        _Builder(result, graph, staging, reader, options, facts).build()
        _check_translated(result, graph, reader, facts.kinds)
    except BaseException:
        staging.close()
        raise
    result._staging = staging
    return result


def _check_has_data(reader: FeedReader, kinds: Counter[str], staging: BlockStaging) -> None:
    if staging.blocks or any(k in USAGE_KINDS or k in CUSTOMER_KINDS for k in kinds):
        return
    if reader.root in BARE_DOCUMENTS:
        what = f"a bare {reader.root}"
    elif kinds:
        what = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        what = f"only {what}"
    else:
        what = "no ESPI resources at all"
    raise NoUsageDataError(f"no usage or customer data to translate: the document holds {what}",
                           reader.diagnostics.source, None, kind=reader.root or "")


def _check_translated(result: Translation, graph: _StagedSummaryGraph, reader: FeedReader, kinds: Counter[str]
                      ) -> None:
    """Rejects documents whose usage data cannot mean anything (readings without units, lone MeterReadings)."""
    real_usage_points = any(up.entry is not None for up in graph.usage_points)
    summaries = graph.has_summaries
    placed = result.reading_count - result.untranslated_readings
    if real_usage_points or summaries or (result.accounts and not result.accounts[0].get("greenbridge_synthetic")) \
            or placed > 0:
        return
    held = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
    if result.reading_count:
        held = f"{result.reading_count} readings in IntervalBlocks" + (f" and {held}" if held else "")
        why = "no ReadingType gives them units and no UsagePoint or summary is present"
    else:
        why = "no UsagePoint, readings, summaries or customer data are present"
    result.close()
    raise NoUsageDataError(f"nothing to translate: the document holds {held or 'no resources'}, but {why}",
                           reader.diagnostics.source, None, kind=reader.root or "")


class _Builder:
    """Builds the small objects and plans the segments of one translation."""

    def __init__(self, result: Translation, graph: _StagedSummaryGraph, staging: BlockStaging, reader: FeedReader,
                 options: TranslateOptions, facts: _DocumentFacts):
        self.result = result
        self.graph = graph
        self.facts = facts
        self.staging = staging
        self.reader = reader
        self.options = options
        self.ids = IdFactory(options.id_secret, options.custodian)
        now = options.now or datetime.now(UTC)
        self.stamp = rfc3339(int(now.timestamp()))
        self.strategy = self._key_strategy()
        result.key_strategy = self.strategy
        result._ids = self.ids
        result._stamp = self.stamp
        result._tou_names = dict(options.tou_names)
        self.scope = options.subscription or ""
        self._zones: dict[tuple | None, tuple[tzinfo, str]] = {}

    # -- natural keys (D13) -----------------------------------------------------------------------------------

    def _key_strategy(self) -> str:
        if self.options.key_strategy != "auto":
            return self.options.key_strategy
        return "uuid" if self.facts.uuid_keys() else "href"

    def key(self, entry: Entry) -> str:
        if self.strategy == "uuid" and entry.id:
            return entry.id.lower()
        href = entry.self_href or f"#entry{entry.seq}"
        return f"{self.scope}|{href}"

    def _account_scope(self, usage_points: list[UsagePointNode]) -> str:
        """What one synthetic account stands for: the subscription, or (when none is given) exactly the set of
        UsagePoints shared, so that two customers' files never share an account."""
        if self.options.subscription:
            return self.options.subscription
        keys = sorted(self.key(up.entry) for up in usage_points if up.entry is not None)
        return "usage-points|" + "|".join(keys) if keys else "feed|" + (self.reader.header.id or "")

    def id_of(self, object_type: str, *parts: Any) -> str:
        return self.ids.make(object_type, *parts)

    # -- the build --------------------------------------------------------------------------------------------

    def build(self) -> None:
        result, graph = self.result, self.graph
        diagnostics = self.reader.diagnostics
        customer = translate_customer(graph, self.id_of, self.key, self.stamp, self.options.entity,
                                      self.options.phone_region, self.options.documentation_url)
        result.accounts.extend(customer.accounts)
        result.service_contracts.extend(customer.service_contracts)
        result.meter_devices.extend(customer.meter_devices)

        # Which series each IntervalBlock entry belongs to: streamed from the scratch file and back into it, so
        # that nothing per block entry stays in memory.
        block_usage_points: set[int] = set()

        def assignments() -> Iterator[tuple[int, int, int]]:
            for header in self.staging.block_entries():
                node = graph.meter_reading_for(header)
                if node is None or node.reading_type is None:
                    continue
                block_usage_points.add(node.usage_point.index)
                yield header.seq, node.usage_point.index, node.index

        self.staging.assign(assignments())
        interval_data = self._cumulative_series_that_do_not_climb()
        synthetic_account_id = None
        usage_points = [up for up in graph.usage_points
                        if up.meter_readings or up.index in graph.summary_usage_points or up.entry]
        result.usage_point_hrefs = tuple(up.self_href for up in usage_points if up.self_href)

        pseudo_count = 0
        plans: dict[int, _UsagePointPlan] = {}  # by UsagePoint index in the graph
        self.staging.begin()  # pseudo-blocks, bill sections and per-UsagePoint data: one transaction
        for node in usage_points:
            key = self.key(node.entry) if node.entry is not None else f"{self.scope}|implicit-usage-point"
            zone, zone_note = self._zone(node)
            formats: dict[int, SeriesFormat] = {}
            for mr in node.meter_readings:
                if mr.reading_type is None:
                    continue
                fmt = classify(mr.reading_type, node.usage_point.service_kind if node.usage_point else None,
                               self.options.default_currency, self.options.register_read_at,
                               interval_data.get(mr.index))
                for warning in fmt.warnings:
                    diagnostics.add(warning, mr.entry.line if mr.entry else None, kind=warning)
                formats[mr.index] = fmt
            commodities = {f.commodity for f in formats.values() if f.commodity}
            commodity = usage_point_commodity(node, commodities)
            joined = customer.usage_points.get(node.self_href or "") if node.self_href else None
            servicepoint_id = self.id_of("servicepoint", key)
            if joined is not None:
                account_id = joined["account"]
                contract_ids = list(joined["contracts"])
                meterdevice_id = joined["meter"]
            else:
                account_id = contract_ids = meterdevice_id = None
            if account_id is None:
                if synthetic_account_id is None:
                    synthetic_account_id = self.id_of("account", "subscription", self._account_scope(usage_points))
                    result.accounts.append(synthetic_account(synthetic_account_id, self.stamp, self.options.entity))
                account_id = synthetic_account_id
            summaries = self.staging.summaries_of(node.index) if node.index in graph.summarised_usage_points else []
            usage_summaries = [(s, related) for kind, _line, s, related in summaries if kind != QUALITY_SUMMARY]
            periods, current_only = billing.merge_summaries(
                [s for s, _related in usage_summaries], lambda m: diagnostics.add(m, None, kind=m),
                [self._summary_direction(s, related) for s, related in usage_summaries])
            if not contract_ids:
                contract_id = self.id_of("servicecontract", "usage-point", key)
                rateplan = None
                if node.usage_point and node.usage_point.service_delivery_point:
                    rateplan = node.usage_point.service_delivery_point.tariff_profile
                if rateplan is None:
                    rateplan = next((p.summary.tariff_profile for p in reversed(periods)
                                     if p.summary.tariff_profile), None)
                monthly = bool(periods) and all(27 * 86400 <= p.duration <= 35 * 86400 for p in periods)
                result.service_contracts.append(synthetic_service_contract(
                    contract_id, self.stamp, account_id, commodity, node.usage_point, bool(node.meter_readings),
                    monthly, rateplan))
                contract_ids = [contract_id]
            if meterdevice_id is None:
                meterdevice_id = self.id_of("meterdevice", "usage-point", key)
                result.meter_devices.append(synthetic_meter_device(
                    meterdevice_id, self.stamp, servicepoint_id, commodity, {f.value_type for f in formats.values()},
                    {f.fields.get("direction") for f in formats.values()} - {None}, node.usage_point))
            local_time = self._local_time_json(node, zone_note)
            result.service_points.append(service_point(
                node, servicepoint_id, self.stamp, commodity, contract_ids,
                joined["address"] if joined else None, local_time))
            if joined is not None:
                for meter in customer.meter_devices:
                    if node.self_href in meter["greenbridge_usage_point_hrefs"]:
                        meter["current_servicepoints"].append(servicepoint_id)
                        if commodity and f"{commodity}_usage" not in meter["meter_types"]:
                            meter["meter_types"].insert(0, f"{commodity}_usage")
                        for contract in customer.service_contracts:
                            if contract["cds_servicecontract_id"] in contract_ids and commodity and \
                                    commodity not in contract["service_types"]:
                                contract["service_types"].append(commodity)

            # bill sections, and the billing usage values as a pseudo-series (D11)
            sections: list[SectionWindow] = []
            pseudo_series: list[Series] = []
            pseudo_blocks: list[tuple[int, int, IntervalBlock]] = []
            series_currency = next((f.cost_currency for f in formats.values() if f.cost_currency), None)
            account_number = customer.account_numbers.get(account_id)
            for period in periods:
                section_id = self.id_of("billsection", key, period.start, period.duration)
                section = billing.bill_section(
                    period, section_id, self.stamp, account_id=account_id, account_number=account_number,
                    commodity=commodity, currency_default=self.options.default_currency,
                    series_currency=series_currency, entity=self.options.entity, contract_id=contract_ids[0],
                    servicepoint_id=servicepoint_id, meterdevice_id=meterdevice_id,
                    dates=lambda start, duration, zone=zone: self._dates(start, duration, zone), id_of=self.id_of)
                self.staging.add_bill_section(section)
                sections.append(SectionWindow(section_id, date.fromisoformat(section["start_date"]),
                                              date.fromisoformat(section["end_date"])))
                for direction, summary in [(period.direction, period.summary), *period.others]:
                    fmt = billing.billing_series_format(summary, commodity, direction)
                    if fmt is None:
                        continue
                    # the billing value joins the staged blocks as its own series, so that it lands in the same
                    # period segment as readings of the same period; its one reading sets its grid
                    pseudo_count += 1
                    pseudo = -pseudo_count
                    pseudo_series.append(Series(pseudo, f"{key}|billing|{pseudo}", fmt, period.duration, None))
                    block = IntervalBlock(interval=DateTimeInterval(period.duration, period.start),
                                          starts=[period.start], durations=[period.duration],
                                          values=[summary.overall_consumption_last_period.value])
                    pseudo_blocks.append((pseudo, node.index, block))
            if pseudo_blocks:
                self.staging.add_pseudo_blocks(pseudo_blocks)
                block_usage_points.add(node.index)
            if current_only:
                diagnostics.add(f"{len(current_only)} UsageSummary without billingPeriod: current-period data only, "
                                "kept on no bill section", node.entry.line if node.entry else None,
                                kind="UsageSummary without billingPeriod")
            series = {}
            for mr_index, fmt in formats.items():
                mr = next(m for m in node.meter_readings if m.index == mr_index)
                series[mr_index] = Series(mr_index, self.key(mr.entry) if mr.entry else f"{key}|mr{mr.implicit_for}",
                                          fmt, None, mr.reading_type.interval_length)
            plan = plans[node.index] = _UsagePointPlan(key, zone, account_id, contract_ids, servicepoint_id,
                                                       meterdevice_id, series)
            extra = self._power_quality_segments(
                [(line, s) for kind, line, s, _related in summaries if kind == QUALITY_SUMMARY], plan)
            if sections or pseudo_series or extra:
                self.staging.put_usage_point_data(node.index, _UsagePointPeriods(sections, pseudo_series, extra))
        self.staging.commit()
        result._bill_section_count = self.staging.bill_section_count

        histograms = self.staging.duration_histograms()
        for plan in plans.values():
            for index, series in plan.series.items():
                series.grid = _grid(histograms.get(index), series.interval_length)
        result._plans = plans
        result._has_blocks = block_usage_points & set(plans)
        result.untranslated_readings, result.untranslated_readings_with_values = \
            self.staging.readings_without_series()
        result.link_conflicts = graph.link_conflicts
        if self.options.statements is not None:
            # statements are O(billing periods) themselves; the sections they claim are written back
            rows = list(self.staging.bill_sections(by_date=False))
            result.bill_statements = billing.bill_statements([section for _row, section in rows],
                                                             self.options.statements, self.stamp, self.id_of,
                                                             customer.account_numbers)
            self.staging.begin()
            for row, section in rows:
                if section["cds_billstatement_id"] is not None:
                    self.staging.replace_bill_section(row, section)
            self.staging.commit()
        self._attach_statement_files(customer)
        for meter in customer.meter_devices:
            meter.pop("greenbridge_usage_point_hrefs", None)  # hrefs may hold meter or customer numbers
        _sort_listing(result)

    def _cumulative_series_that_do_not_climb(self) -> dict[int, str]:
        """Series labelled cumulative (accumulationBehaviour 1, 2, 3, 9) whose values do not climb, by MeterReading
        index, with the reason they are read as interval data (docs/mapping.md §4.4). A register only ever falls
        when its dial rolls over or its meter is exchanged: a handful of times in years. Values that fall at least
        twice and in at least 1 of 20 consecutive pairs are amounts per interval, whatever the label says. Net
        registers (flowDirection 4) legitimately fall while the customer exports, and are left alone."""
        candidates = {mr.index: mr.reading_type for mr in self.graph.meter_readings
                      if mr.reading_type is not None
                      and mr.reading_type.accumulation_behaviour in CUMULATIVE_ACCUMULATIONS
                      and mr.reading_type.flow_direction != FLOW_NET}
        reasons = {}
        for index, (pairs, falls) in self.staging.value_falls(candidates).items():
            if falls >= 2 and falls * 20 >= pairs:
                acc = candidates[index].accumulation_behaviour
                reasons[index] = (f"accumulationBehaviour {acc} ({ACCUMULATION_NAMES[acc]}), but the values do not "
                                  f"climb ({falls} of {pairs} consecutive readings fall): read as interval data")
        if reasons:
            self.result.series_read_as_interval_data = len(reasons)
            self.result.notes.append(f"{len(reasons)} series labelled cumulative do not climb and are read as "
                                     "interval data (greenbridge_accumulation_note on their formats)")
        return reasons

    def _summary_direction(self, summary: UsageSummary, related: tuple[str, ...]) -> str | None:
        """The flow direction a summary states: its overallConsumptionLastPeriod's readingTypeRef, else a ReadingType
        its entry links as related; None when neither names a ReadingType with a direction CDS knows."""
        measurement = summary.overall_consumption_last_period
        reading_type = self.graph.reading_type_by_href(measurement.reading_type_ref) if measurement else None
        for href in related:
            if reading_type is not None:
                break
            reading_type = self.graph.reading_type_by_href(href)
        return billing.FLOW_DIRECTIONS.get(reading_type.flow_direction) if reading_type is not None else None

    def _attach_statement_files(self, customer: CustomerObjects) -> None:
        for _entry, statement, account_id in customer.statements:
            files = [{"url": ref.statement_url, "media_type": ref.media_type, "file_name": ref.file_name}
                     for ref in statement.statement_refs if ref.statement_url]
            if not files or account_id is None:
                continue
            for account in self.result.accounts:
                if account["cds_account_id"] == account_id:
                    account.setdefault("greenbridge_statement_files", []).append(
                        {"issued": rfc3339(statement.issue_date_time) if statement.issue_date_time else None,
                         "files": files})

    def _zone(self, node: UsagePointNode) -> tuple[tzinfo, str]:
        """The zone of a UsagePoint's local days; UsagePoints with the same LocalTimeParameters share one."""
        ltp = node.local_time
        key = (ltp.dst_start_rule, ltp.dst_end_rule, ltp.dst_offset, ltp.tz_offset) if ltp is not None else None
        zone = self._zones.get(key)
        if zone is None:
            zone = self._zones[key] = self._decide_zone(ltp)
        return zone

    def _decide_zone(self, ltp) -> tuple[tzinfo, str]:
        parameters = None
        if ltp is not None and None not in (ltp.dst_start_rule, ltp.dst_end_rule, ltp.dst_offset, ltp.tz_offset):
            parameters = LocalTimeParameters(ltp.dst_start_rule, ltp.dst_end_rule, ltp.dst_offset, ltp.tz_offset)
        stated = self.reader.stated_offset()  # the local offset the feed's Atom dates state (§3)
        if parameters is None:
            if self.options.timezone:
                return ZoneInfo(self.options.timezone), f"configured zone {self.options.timezone}"
            if stated is not None:
                return zone_for(None, stated_offset=stated)
            return UTC, "no usable LocalTimeParameters and no configured zone: local days are UTC days"
        try:
            return zone_for(parameters, self.options.timezone, stated_offset=stated)
        except LocalTimeError as exc:
            return UTC, f"LocalTimeParameters unusable ({exc}): local days are UTC days"

    def _local_time_json(self, node: UsagePointNode, zone_note: str) -> dict[str, Any]:
        ltp = node.local_time
        result: dict[str, Any] = {"note": zone_note}
        if ltp is not None:
            result.update({"tz_offset": ltp.tz_offset, "dst_offset": ltp.dst_offset,
                           "dst_start_rule": ltp.dst_start_rule, "dst_end_rule": ltp.dst_end_rule})
        return result

    @staticmethod
    def _dates(start: int, duration: int, zone: tzinfo) -> tuple[date, date]:
        """CDS dates of an ESPI interval: local date of the start, local date of the last second (end − 1 s)."""
        return local_date(start, zone), local_date(start + max(duration, 1) - 1, zone)

    def _power_quality_segments(self, summaries: list[tuple[int | None, ElectricPowerQualitySummary]],
                                plan: _UsagePointPlan) -> list[dict[str, Any]]:
        """ElectricPowerQualitySummary (with its entry's line) → ``greenbridge_power_quality`` period segments
        (FB_17)."""
        segments = []
        for line, summary in summaries:
            interval = summary.summary_interval
            if interval is None or interval.start is None or not interval.duration:
                self.reader.diagnostics.add("ElectricPowerQualitySummary without summaryInterval ignored",
                                            line, kind="power quality without interval")
                continue
            counters = {name: getattr(summary, name) for name in (
                "flicker_plt", "flicker_pst", "harmonic_voltage", "long_interruptions", "mains_voltage",
                "measurement_protocol", "power_frequency", "rapid_voltage_changes", "short_interruptions",
                "supply_voltage_dips", "supply_voltage_imbalance", "supply_voltage_variations", "temp_overvoltage")}
            segments.append({
                "cds_usagesegment_id": self.id_of("usagesegment", plan.key, "power_quality", interval.start,
                                                  interval.duration),
                "cds_created": self.stamp, "cds_modified": self.stamp, "cds_synced": self.stamp,
                "related_aggregations": [], "related_accounts": [plan.account_id],
                "related_servicecontracts": list(plan.contract_ids), "related_servicepoints": [plan.servicepoint_id],
                "related_meterdevices": [plan.meterdevice_id], "related_billsections": [],
                "segment_start": rfc3339(interval.start), "segment_end": rfc3339(interval.start + interval.duration),
                "interval": interval.duration,
                "formats": [{"id": "greenbridge_power_quality", "type": "greenbridge_power_quality"}],
                "values": [[{k: v for k, v in counters.items() if v is not None}]],
            })
        return segments


def _grid(histogram: Counter | None, interval_length: int | None) -> int | None:
    """A series' usual reading length: the most common duration (readings without one, or of duration 0, count as
    intervalLength)."""
    if not histogram:
        return interval_length
    counts: Counter = Counter()
    for duration, count in histogram.items():
        duration = interval_length if duration is None or (duration == 0 and interval_length) else duration
        if duration:
            counts[duration] += count
    if not counts:
        return None
    return max(counts.items(), key=lambda item: (item[1], -item[0]))[0]


def _sort_listing(result: Translation) -> None:
    for name in ("service_points", "meter_devices", "accounts", "service_contracts"):
        getattr(result, name).sort(key=lambda obj: next(iter(obj.values())))
    # bill sections come out of the scratch file by (start_date, cds_billsection_id)


def source_size(source: Source) -> int | None:
    """Size in bytes of a path source (for progress bars), else None."""
    if isinstance(source, str | os.PathLike):
        try:
            return os.path.getsize(source)
        except OSError:
            return None
    if isinstance(source, bytes | bytearray):
        return len(source)
    return None
