"""Scratch storage for IntervalBlocks while a feed is translated.

An IntervalBlock cannot be translated when it is read: its MeterReading, ReadingType or UsagePoint may come later
in the document, and the segments of one day gather every series of a UsagePoint, which a feed may deliver far
apart. Holding all readings in memory would make memory grow with the file, so blocks go to a temporary SQLite
database, one row per block (its columns serialised with ``marshal``: compact, fast, and only ever read back by
this process). After the link graph is resolved, the blocks come back grouped by UsagePoint and ordered by time.

Everything else that grows with the length of the history a document covers lives here too: summary entries (one
UsageSummary per UsagePoint and billing period; pickled, resolved to their UsagePoint by link headers and read back
one UsagePoint at a time), the bill sections built from them, and per UsagePoint what its segments need from its
billing periods. Memory then holds O(UsagePoints) objects, not O(days).
"""

from __future__ import annotations

import contextlib
import marshal
import os
import pickle
import sqlite3
import tempfile
import weakref
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from espi.atom import Entry, Link
from espi.codes import INT48_SENTINEL
from espi.feed import SUMMARY_KINDS, BlockEntryHeader
from espi.intervals import IntervalBlock
from espi.usage import DateTimeInterval

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)

MICROSECOND = timedelta(microseconds=1)

_SCHEMA = """
CREATE TABLE block (
    id INTEGER PRIMARY KEY,
    entry_seq INTEGER NOT NULL,
    block_index INTEGER NOT NULL,
    lower_bound INTEGER,
    durations BLOB NOT NULL,
    data BLOB NOT NULL
);
CREATE TABLE block_entry (
    seq INTEGER PRIMARY KEY,
    self_href TEXT,
    up_href TEXT,
    related TEXT NOT NULL,
    updated INTEGER,
    in_meter_reading INTEGER NOT NULL,
    line INTEGER
);
CREATE TABLE assignment (
    seq INTEGER PRIMARY KEY,
    usage_point INTEGER NOT NULL,
    series INTEGER NOT NULL
);
CREATE TABLE summary_entry (
    seq INTEGER PRIMARY KEY,
    self_href TEXT,
    up_href TEXT,
    related TEXT NOT NULL,
    line INTEGER,
    kinds TEXT NOT NULL,
    data BLOB NOT NULL
);
CREATE TABLE summary (
    ordinal INTEGER PRIMARY KEY,
    usage_point INTEGER NOT NULL,
    kind TEXT NOT NULL,
    seq INTEGER NOT NULL
);
CREATE TABLE entry_id (
    lower_id TEXT NOT NULL
);
CREATE TABLE usage_point_data (
    usage_point INTEGER PRIMARY KEY,
    data BLOB NOT NULL
);
CREATE TABLE bill_section (
    id INTEGER PRIMARY KEY,
    start_date TEXT NOT NULL,
    section_id TEXT NOT NULL,
    data BLOB NOT NULL
);
"""
#: summaries, bill sections and per-UsagePoint data are pickled (dataclasses and Decimals, read back only here)
_PICKLE = pickle.HIGHEST_PROTOCOL


class BlockStaging:
    """A temporary SQLite file holding staged blocks; ``close()`` deletes it."""

    def __init__(self, directory: str | None = None):
        handle, self.path = tempfile.mkstemp(prefix="greenbridge-staging-", suffix=".sqlite", dir=directory)
        os.close(handle)
        # The file goes even if nobody calls close() (a forgotten Translation, an exception): at garbage
        # collection or interpreter exit.
        self._remove = weakref.finalize(self, _remove, self.path)
        self._db = sqlite3.connect(self.path, isolation_level=None)
        for pragma in ("journal_mode=OFF", "synchronous=OFF", "temp_store=FILE", "cache_size=-8000"):
            self._db.execute(f"PRAGMA {pragma}")
        self._db.executescript(_SCHEMA)
        self._db.execute("BEGIN")
        self._pending_blocks: list[tuple] = []
        self.blocks = 0
        self.bill_section_count = 0

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        self._remove()

    def __enter__(self) -> BlockStaging:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def begin(self) -> None:
        """Starts a transaction for the writes after reading (pseudo-blocks, per-UsagePoint data, bill sections)."""
        self._db.execute("BEGIN")

    def commit(self) -> None:
        self._db.execute("COMMIT")

    # -- writing ----------------------------------------------------------------------------------------------

    def add_block(self, entry_seq: int, block_index: int, block: IntervalBlock) -> None:
        interval = block.interval
        data = marshal.dumps((
            (interval.duration, interval.start) if interval is not None else None,
            block.starts, block.durations, block.values, block.costs, block.qualities,
            block.tous, block.tiers, block.cpps, block.line,
        ))
        durations = marshal.dumps(dict(Counter(block.durations)))
        self._pending_blocks.append((entry_seq, block_index, block.lower_bound(), durations, data))
        self.blocks += 1
        if len(self._pending_blocks) >= 256:
            self._flush()

    def add_pseudo_blocks(self, blocks: Iterable[tuple[int, int, IntervalBlock]]) -> None:
        """Blocks made by the translator (e.g. UsageSummary values): (negative entry seq, usage point, block), each
        its own series (numbered as its seq) and already assigned. Call between ``begin()`` and ``commit()``."""
        assignments = []
        for seq, usage_point, block in blocks:
            self.add_block(seq, 0, block)
            assignments.append((seq, usage_point, seq))
        self._flush()
        self._db.executemany("INSERT OR REPLACE INTO assignment VALUES (?, ?, ?)", assignments)

    def add_summary_entry(self, entry: Entry) -> None:
        """An entry holding summaries (UsageSummary, ElectricPowerUsageSummary, ElectricPowerQualitySummary): its
        links, to resolve its UsagePoint, and its summary resources, pickled."""
        kinds = dict.fromkeys(r.name for r in entry.resources if r.name in SUMMARY_KINDS)
        data = pickle.dumps([(r.name, r.value) for r in entry.resources if r.name in kinds], _PICKLE)
        self._db.execute("INSERT INTO summary_entry VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (entry.seq, entry.self_href, entry.up_href, "\n".join(entry.related), entry.line,
                          "\n".join(kinds), data))

    def add_entry_id(self, lower_id: str) -> None:
        """One entry's (lower-cased) atom:id, for ``entry_ids_unique``."""
        self._db.execute("INSERT INTO entry_id VALUES (?)", (lower_id,))

    def add_block_entry(self, header: BlockEntryHeader) -> None:
        # microseconds: entries updated within the same second must still order (the newer wins a slot)
        updated = (header.updated - EPOCH) // MICROSECOND if isinstance(header.updated, datetime) else None
        self._db.execute(
            "INSERT OR REPLACE INTO block_entry VALUES (?, ?, ?, ?, ?, ?, ?)",
            (header.seq, header.self_href, header.up_href, "\n".join(header.related), updated,
             int(header.blocks_in_meter_reading), header.line),
        )

    def _flush(self) -> None:
        if self._pending_blocks:
            self._db.executemany(
                "INSERT INTO block (entry_seq, block_index, lower_bound, durations, data) VALUES (?, ?, ?, ?, ?)",
                self._pending_blocks)
            self._pending_blocks.clear()

    def finish_reading(self) -> None:
        self._flush()
        self._db.execute("COMMIT")
        self._db.execute("CREATE INDEX block_entry_seq ON block (entry_seq)")

    # -- resolution -------------------------------------------------------------------------------------------

    def block_entries(self) -> Iterator[BlockEntryHeader]:
        """The headers of every IntervalBlock entry in document order, streamed (never all in memory)."""
        rows = self._db.cursor().execute(
            "SELECT seq, self_href, up_href, related, updated, in_meter_reading, line FROM block_entry ORDER BY seq")
        for seq, self_href, up_href, related, updated, in_mr, line in rows:
            yield BlockEntryHeader(seq, self_href, up_href, tuple(related.split("\n")) if related else (),
                                   EPOCH + updated * MICROSECOND if updated is not None else None,
                                   bool(in_mr), line)

    def assign(self, assignments: Iterable[tuple[int, int, int]]) -> None:
        """(entry seq, usage point index, series index) for every block entry that has a series (may be a
        generator reading ``block_entries``: the rows go to another table)."""
        writer = self._db.cursor()
        writer.execute("BEGIN")
        writer.executemany("INSERT OR REPLACE INTO assignment VALUES (?, ?, ?)", assignments)
        writer.execute("COMMIT")

    def readings_without_series(self) -> tuple[int, int]:
        """How many readings sit in blocks no series claimed: (all, those with a value)."""
        total = with_values = 0
        rows = self._db.execute(
            "SELECT b.data FROM block b LEFT JOIN assignment a ON a.seq = b.entry_seq WHERE a.seq IS NULL")
        for (data,) in rows:
            values = marshal.loads(data)[3]
            total += len(values)
            with_values += len(values) - values.count(None) - values.count(INT48_SENTINEL)
        return total, with_values

    def value_falls(self, series: Iterable[int]) -> dict[int, tuple[int, int]]:
        """(consecutive pairs, falls) of each given series' values in time order: how often a value is lower than
        the one before it (blocks by lower bound, then each block's readings by start). Streams one block at a
        time; values absent or "not set" are skipped."""
        result: dict[int, tuple[int, int]] = {}
        wanted = [(index,) for index in sorted(set(series))]
        if not wanted:
            return result
        self._db.execute("CREATE TEMP TABLE IF NOT EXISTS wanted_series (series INTEGER PRIMARY KEY)")
        self._db.execute("DELETE FROM wanted_series")
        self._db.executemany("INSERT INTO wanted_series VALUES (?)", wanted)
        order = self._db.execute(
            "SELECT a.series, b.id FROM block b JOIN assignment a ON a.seq = b.entry_seq "
            "JOIN wanted_series w ON w.series = a.series "
            "ORDER BY a.series, b.lower_bound, b.entry_seq, b.block_index")
        fetch = self._db.cursor()
        current, previous, pairs, falls = None, None, 0, 0
        for series_index, block_id in order:
            if series_index != current:
                if current is not None:
                    result[current] = (pairs, falls)
                current, previous, pairs, falls = series_index, None, 0, 0
            (data,) = fetch.execute("SELECT data FROM block WHERE id = ?", (block_id,)).fetchone()
            block = marshal.loads(data)
            starts, values = block[1], block[3]
            if None not in starts:
                values = [value for _start, value in sorted(zip(starts, values, strict=True), key=lambda p: p[0])]
            for value in values:
                if value is None or value == INT48_SENTINEL:
                    continue
                if previous is not None:
                    pairs += 1
                    falls += value < previous
                previous = value
        if current is not None:
            result[current] = (pairs, falls)
        return result

    def duration_histograms(self) -> dict[int, Counter]:
        """Per series of the document (not the translator's pseudo-series): how many readings have each duration
        (None = no timePeriod)."""
        histograms: dict[int, Counter] = {}
        rows = self._db.execute("SELECT a.series, b.durations FROM block b JOIN assignment a ON a.seq = b.entry_seq "
                                "WHERE a.series >= 0")
        for series, durations in rows:
            histograms.setdefault(series, Counter()).update(marshal.loads(durations))
        return histograms

    def blocks_by_usage_point(self) -> Iterator[tuple[int, int, int | None, int, int, int, IntervalBlock]]:
        """(usage point, series, lower bound, updated or -1, entry seq, block index, block), grouped by
        usage point and ordered by lower bound: the order the segmenter needs."""
        # Sort only the small keys; fetch each block's data by primary key in that order, so that SQLite's sorter
        # never has to carry the readings.
        order = self._db.execute(
            "SELECT b.id, a.usage_point, a.series, b.lower_bound, e.updated, b.entry_seq, b.block_index "
            "FROM block b JOIN assignment a ON a.seq = b.entry_seq LEFT JOIN block_entry e ON e.seq = b.entry_seq "
            "ORDER BY a.usage_point, b.lower_bound, b.entry_seq, b.block_index")
        fetch = self._db.cursor()
        for block_id, usage_point, series, lower_bound, updated, seq, index in order:
            (data,) = fetch.execute("SELECT data FROM block WHERE id = ?", (block_id,)).fetchone()
            (interval, starts, durations, values, costs, qualities, tous, tiers, cpps, line) = marshal.loads(data)
            block = IntervalBlock(
                interval=DateTimeInterval(duration=interval[0], start=interval[1]) if interval else None,
                starts=starts, durations=durations, values=values, costs=costs,
                qualities=qualities, tous=tous, tiers=tiers, cpps=cpps, line=line)
            yield usage_point, series, lower_bound, -1 if updated is None else updated, seq, index, block

    # -- summaries, and what is built from them -------------------------------------------------------------------

    def entry_ids_unique(self) -> bool:
        """Whether no two ids given to ``add_entry_id`` are equal."""
        (duplicates,) = self._db.execute(
            "SELECT EXISTS (SELECT 1 FROM entry_id GROUP BY lower_id HAVING COUNT(*) > 1)").fetchone()
        return not duplicates

    def summary_headers(self, kind: str) -> Iterator[Entry]:
        """The entries holding a summary of ``kind``, in document order, as link-only entries (seq, line, links)."""
        rows = self._db.cursor().execute(
            "SELECT seq, self_href, up_href, related, line, kinds FROM summary_entry ORDER BY seq")
        for seq, self_href, up_href, related, line, kinds in rows:
            if kind not in kinds.split("\n"):
                continue
            links = [Link("self", self_href)] if self_href else []
            if up_href:
                links.append(Link("up", up_href))
            if related:
                links.extend(Link("related", href) for href in related.split("\n"))
            yield Entry(seq, line, links=links)

    def assign_summaries(self, assignments: Iterable[tuple[int, str, int]]) -> None:
        """(usage point index, summary kind, entry seq) in the order the summaries hang off their UsagePoints (may
        be a generator reading ``summary_headers``)."""
        writer = self._db.cursor()
        writer.execute("BEGIN")
        writer.executemany("INSERT INTO summary (usage_point, kind, seq) VALUES (?, ?, ?)", assignments)
        writer.execute("COMMIT")
        writer.execute("CREATE INDEX summary_usage_point ON summary (usage_point, ordinal)")

    def summaries_of(self, usage_point: int) -> list[tuple[str, int | None, Any, tuple[str, ...]]]:
        """(kind, entry line, summary, the entry's related hrefs) of one UsagePoint's summaries, in the order they
        were assigned."""
        result = []
        rows = self._db.execute(
            "SELECT s.kind, e.line, e.data, e.related FROM summary s JOIN summary_entry e ON e.seq = s.seq "
            "WHERE s.usage_point = ? ORDER BY s.ordinal", (usage_point,))
        for kind, line, data, related in rows:
            hrefs = tuple(related.split("\n")) if related else ()
            result.extend((kind, line, value, hrefs) for name, value in pickle.loads(data) if name == kind)
        return result

    def put_usage_point_data(self, usage_point: int, data: Any) -> None:
        self._db.execute("INSERT OR REPLACE INTO usage_point_data VALUES (?, ?)",
                         (usage_point, pickle.dumps(data, _PICKLE)))

    def usage_point_data(self, usage_point: int) -> Any:
        row = self._db.execute("SELECT data FROM usage_point_data WHERE usage_point = ?", (usage_point,)).fetchone()
        return None if row is None else pickle.loads(row[0])

    def add_bill_section(self, section: dict[str, Any]) -> None:
        self._db.execute("INSERT INTO bill_section (start_date, section_id, data) VALUES (?, ?, ?)",
                         (section["start_date"], section["cds_billsection_id"], pickle.dumps(section, _PICKLE)))
        self.bill_section_count += 1

    def replace_bill_section(self, row: int, section: dict[str, Any]) -> None:
        self._db.execute("UPDATE bill_section SET data = ? WHERE id = ?", (pickle.dumps(section, _PICKLE), row))

    def bill_sections(self, by_date: bool = True) -> Iterator[tuple[int, dict[str, Any]]]:
        """(row, section) of every bill section, by start date and id (the listing order; ties in the order they
        were added), or with ``by_date=False`` in the order they were added."""
        order = "start_date, section_id, id" if by_date else "id"
        rows = self._db.cursor().execute(f"SELECT id, data FROM bill_section ORDER BY {order}")
        for row, data in rows:
            yield row, pickle.loads(data)
