"""Output paths of the command line (greenbridge/output.py) and the reading report of ``greenbridge translate``.

Regular files are replaced atomically; devices, FIFOs and ``-`` are written to directly and never replaced (run as
root, the old rename replaced /dev/null with a regular file). ``translate`` accounts for every reading on standard
error and in ``--report``, and exits 3 when readings with values were lost for a reason it cannot name.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from espi_builders import E, Ent, block, document, reading, reading_type

from bridge.from_espi import ReadingAccount
from bridge.from_espi.segments import Segmenter
from cds.jsonenc import decode
from greenbridge.cli import main
from greenbridge.commands.translate import reading_status
from greenbridge.output import output_stream

NOW = "2026-01-01T00:00:00Z"
T0 = 1719792000


@pytest.fixture
def feed(tmp_path) -> Path:
    path = tmp_path / "feed.xml"
    assert main(["generate", "--usage-points", "1", "--days", "2", "-o", str(path)]) == 0
    return path


def _is_char_device(path: str) -> bool:
    return stat.S_ISCHR(os.stat(path).st_mode)


class _FifoReader(threading.Thread):
    """Reads a FIFO to its end in the background (opening it for writing blocks until a reader is there)."""

    def __init__(self, path: Path):
        super().__init__(daemon=True)
        self.path = path
        self.data = b""

    def run(self) -> None:
        with open(self.path, "rb") as fifo:
            self.data = fifo.read()


# -- where output goes ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["translate", "generate"])
def test_dev_null_is_written_to_not_replaced(feed, command, capsys):
    assert _is_char_device("/dev/null")
    args = ["translate", str(feed), "--now", NOW] if command == "translate" else ["generate", "--days", "1"]
    assert main([*args, "-o", "/dev/null"]) == 0
    assert _is_char_device("/dev/null")
    assert not [name for name in os.listdir("/dev") if name.startswith("null.")]  # no temporary file beside it
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("command", ["translate", "generate"])
def test_a_fifo_receives_the_whole_output_and_stays_a_fifo(feed, tmp_path, command):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader = _FifoReader(fifo)
    reader.start()
    args = ["translate", str(feed), "-q", "--now", NOW] if command == "translate" else ["generate", "--days", "1"]
    assert main([*args, "-o", str(fifo)]) == 0
    reader.join(timeout=60)
    assert not reader.is_alive()
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    if command == "translate":
        direct = tmp_path / "direct.json"
        assert main(["translate", str(feed), "-q", "--now", NOW, "-o", str(direct)]) == 0
        assert reader.data == direct.read_bytes()
        assert len(decode(reader.data)["usage_segments"]) == 2
    else:
        assert reader.data.startswith(b"<?xml") and reader.data.endswith(b"</feed>\n")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".part")) == []


@pytest.mark.parametrize("command", ["translate", "generate"])
def test_dash_is_standard_output(feed, command, tmp_path):
    args = ["translate", str(feed), "-q", "--now", NOW] if command == "translate" else ["generate", "--days", "1"]
    result = subprocess.run([sys.executable, "-m", "greenbridge", *args, "-o", "-"], capture_output=True,
                            cwd=tmp_path, check=False)
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "-").exists()
    if command == "translate":
        assert len(decode(result.stdout)["service_points"]) == 1
    else:
        assert result.stdout.startswith(b"<?xml")


def test_a_regular_file_is_replaced_atomically_and_kept_on_failure(tmp_path):
    target = tmp_path / "out.json"
    target.write_bytes(b"old")
    os.chmod(target, 0o640)
    with output_stream(str(target)) as out:
        out.write(b"new")
        assert target.read_bytes() == b"old"  # nothing visible until complete
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o640  # the old file's mode carries over
    with pytest.raises(RuntimeError), output_stream(str(target)) as out:
        out.write(b"half")
        raise RuntimeError("interrupted")
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_a_symbolic_link_keeps_pointing_at_its_replaced_target(tmp_path):
    target = tmp_path / "data" / "out.json"
    target.parent.mkdir()
    target.write_bytes(b"old")
    link = tmp_path / "latest.json"
    link.symlink_to(target)
    with output_stream(str(link), text=True) as out:
        out.write("new")
    assert link.is_symlink() and target.read_text() == "new"


def test_a_new_file_gets_the_usual_permissions(tmp_path):
    mask = os.umask(0o022)
    try:
        with output_stream(str(tmp_path / "fresh.xml"), text=True) as out:
            out.write("x")
    finally:
        os.umask(mask)
    assert stat.S_IMODE(os.stat(tmp_path / "fresh.xml").st_mode) == 0o644


# -- the reading report -------------------------------------------------------------------------------------------

BASE = "https://report.test/espi/1_1/resource/Subscription/1"
UP = f"{BASE}/UsagePoint/1"
MR = f"{UP}/MeterReading/1"


def _document() -> bytes:
    """Five readings: two placed, one without a start, one at the 'no time' placeholder, one without duration."""
    content = (block(T0, 7200, reading(100, T0, 3600), reading(200, T0 + 3600, 3600), reading(300, 2**31 - 1, 3600),
                     reading(400, T0 + 7200, 0)),
               E("IntervalBlock", reading(500)))
    return document([Ent(UP, f"{BASE}/UsagePoint", (f"{UP}/MeterReading",), (E("UsagePoint"),)),
                     Ent(MR, f"{UP}/MeterReading", (f"{UP}/ReadingType/1", f"{MR}/IntervalBlock"),
                         (E("MeterReading"),)),
                     Ent(f"{UP}/ReadingType/1", f"{UP}/ReadingType", (), (reading_type(interval=None),)),
                     Ent(f"{MR}/IntervalBlock/1", f"{MR}/IntervalBlock", (), content)])


def test_translate_reports_every_reading_on_stderr_and_as_json(tmp_path, capsys):
    source = tmp_path / "in.xml"
    source.write_bytes(_document())
    report = tmp_path / "report.json"
    assert main(["translate", str(source), "-o", str(tmp_path / "out.json"), "--report", str(report),
                 "--now", NOW]) == 0
    err = capsys.readouterr().err
    assert (f"{source}: 5 readings read, 2 placed; not placed: 1 without a start (no timePeriod start, no block "
            "interval start), 1 without a duration (0 or absent, and no ReadingType intervalLength), 1 starting at "
            "the 2147483647 'no time' placeholder\n") in err
    data = json.loads(report.read_text())
    assert data["source"] == str(source)
    assert data["readings"] == {
        "read": 5, "read_with_values": 5, "placed": 2, "placed_with_values": 2,
        "not_placed": {"no ReadingType": 0, "no start": 1, "no duration": 1, "no-time placeholder start": 1,
                       "superseded": 0},
        "not_placed_with_values": {"no ReadingType": 0, "no start": 1, "no duration": 1,
                                   "no-time placeholder start": 1, "superseded": 0},
        "unaccounted": 0, "unaccounted_with_values": 0, "duration_zero_stretched": 0, "link_conflicts": 0,
        "series_read_as_interval_data": 0}
    assert list(decode((tmp_path / "out.json").read_bytes())) == [
        "usage_segments", "service_points", "meter_devices", "bill_sections", "bill_statements", "accounts",
        "service_contracts"]  # the report never enters the CDS listings


def test_translate_exits_3_when_readings_with_values_vanish(tmp_path, capsys, monkeypatch):
    """A translator bug that drops readings without counting them (injected here) must not pass silently."""
    source = tmp_path / "in.xml"
    source.write_bytes(_document())
    monkeypatch.setattr(Segmenter, "_drop", lambda self, start, duration, value, series: None)
    out = tmp_path / "out.json"
    assert main(["translate", str(source), "-q", "-o", str(out), "--now", NOW]) == 3
    err = capsys.readouterr().err
    assert err == (f"greenbridge translate: {source}: 3 readings with values were lost for a reason the translator "
                   "cannot name; the output is incomplete (please report this)\n")
    assert decode(out.read_bytes())["usage_segments"]  # what could be translated is still written


def test_exit_status_depends_on_readings_with_values_only(capsys):
    def account(**changes) -> ReadingAccount:
        fields = {"read": 10, "read_with_values": 8, "placed": 7, "placed_with_values": 6,
                  "not_placed": {"no start": 3}, "not_placed_with_values": {"no start": 2}}
        fields.update(changes)
        return ReadingAccount(**fields)

    assert reading_status("f.xml", account()) == 0
    # a reading without a value that went missing is reported, but loses no data
    empty_missing = account(placed=6)
    assert empty_missing.unaccounted == 1 and empty_missing.unaccounted_with_values == 0
    assert reading_status("f.xml", empty_missing) == 0
    assert "1 for no reason the translator can name (0 with values)" in empty_missing.summary()
    assert reading_status("f.xml", account(placed=6, placed_with_values=5)) == 3
    assert "1 readings with values were lost" in capsys.readouterr().err


@pytest.mark.samples
def test_every_sample_accounts_for_every_reading(sample):
    from conftest import sample_files

    from bridge.from_espi import TranslateOptions, translate
    from espi.errors import NoUsageDataError

    checked = 0
    for path in sample_files():
        try:
            with translate(path, TranslateOptions()) as result:
                for _segment in result.usage_segments():
                    pass
                account = result.reading_account()
        except NoUsageDataError:
            continue
        assert account.unaccounted == 0 and account.unaccounted_with_values == 0, path.name
        # real files: no IntervalBlock link conflicts and no readings of duration 0 in these samples
        assert account.link_conflicts == 0 and account.duration_zero_stretched == 0, path.name
        checked += 1
    if not checked:
        sample("sdk_15minLP_15Days.xml")  # skips when the shared samples are absent
