"""Scratch storage for IntervalBlocks while a feed is translated.

An IntervalBlock cannot be translated when it is read: its MeterReading, ReadingType or UsagePoint may come later
in the document, and the segments of one day gather every series of a UsagePoint, which a feed may deliver far
apart. Holding all readings in memory would make memory grow with the file, so blocks go to a temporary SQLite
database, one row per block (its columns serialised with ``marshal``: compact, fast, and only ever read back by
this process). After the link graph is resolved, the blocks come back grouped by UsagePoint and ordered by time.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import sqlite3
import tempfile
import weakref
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta

from espi.feed import BlockEntryHeader
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
"""


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

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        self._remove()

    def __enter__(self) -> BlockStaging:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

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

    def add_pseudo_block(self, seq: int, block: IntervalBlock) -> None:
        """A block made by the translator (e.g. UsageSummary values), staged under a negative entry seq."""
        self._db.execute("BEGIN")
        self.add_block(seq, 0, block)
        self._flush()
        self._db.execute("COMMIT")

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

    def readings_without_series(self) -> int:
        """How many readings sit in blocks no series claimed."""
        total = 0
        rows = self._db.execute(
            "SELECT b.data FROM block b LEFT JOIN assignment a ON a.seq = b.entry_seq WHERE a.seq IS NULL")
        for (data,) in rows:
            total += len(marshal.loads(data)[3])
        return total

    def duration_histograms(self) -> dict[int, Counter]:
        """Per series: how many readings have each duration (None = no timePeriod)."""
        histograms: dict[int, Counter] = {}
        rows = self._db.execute("SELECT a.series, b.durations FROM block b JOIN assignment a ON a.seq = b.entry_seq")
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
