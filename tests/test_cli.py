"""The `greenbridge translate` and `greenbridge generate` commands, end to end through `greenbridge.cli.main`."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from decimal import Decimal

import pytest

from cds.jsonenc import decode
from greenbridge.cli import main

LISTINGS = ["usage_segments", "service_points", "meter_devices", "bill_sections", "bill_statements", "accounts",
            "service_contracts"]


@pytest.fixture
def feed(tmp_path):
    path = tmp_path / "feed.xml"
    assert main(["generate", "--usage-points", "2", "--days", "35", "--net-metering", "--quality-gaps",
                 "-o", str(path)]) == 0
    return path


def test_generate_is_deterministic_and_writes_atomically(tmp_path, capsys):
    first, second = tmp_path / "a.xml", tmp_path / "b.xml"
    for path in (first, second):
        assert main(["generate", "--usage-points", "3", "--days", "3", "--commodity", "mixed", "-o", str(path)]) == 0
    assert hashlib.sha256(first.read_bytes()).digest() == hashlib.sha256(second.read_bytes()).digest()
    assert not list(tmp_path.glob("*.part"))
    assert "readings for 3 usage points" in capsys.readouterr().err
    other = tmp_path / "c.xml"
    assert main(["generate", "--usage-points", "3", "--days", "3", "--commodity", "mixed", "--seed", "2",
                 "-o", str(other)]) == 0
    assert other.read_bytes() != first.read_bytes()


def test_generate_refuses_bad_options(capsys):
    assert main(["generate", "--interval", "7"]) == 2
    assert "interval must divide a day" in capsys.readouterr().err


def test_translate_writes_every_listing_in_order(feed, tmp_path, capsys):
    out = tmp_path / "out.json"
    assert main(["translate", str(feed), "-o", str(out), "--now", "2026-01-01T00:00:00Z"]) == 0
    data = decode(out.read_bytes())
    assert list(data) == LISTINGS
    assert len(data["service_points"]) == 2
    assert data["bill_statements"] == []  # no statements without utility mode (D7)
    assert all(s["cds_created"] == "2026-01-01T00:00:00Z" for s in data["usage_segments"])
    err = capsys.readouterr().err
    assert f"{feed}: " in err and "usage segments" in err and "readings read" in err
    assert not list(tmp_path.glob("*.part"))


def test_translate_to_stdout_and_ndjson_agree(feed, capsys):
    assert main(["translate", str(feed), "-q", "--now", "2026-01-01T00:00:00Z"]) == 0
    whole = decode(capsys.readouterr().out)
    assert main(["translate", str(feed), "-q", "--ndjson", "--now", "2026-01-01T00:00:00Z"]) == 0
    lines = capsys.readouterr().out.splitlines()
    regrouped: dict[str, list] = {name: [] for name in LISTINGS}
    for line in lines:
        item = decode(line)
        assert set(item) == {"listing", "object"}
        regrouped[item["listing"]].append(item["object"])
    assert regrouped == whole


def test_decimals_survive_the_json_exactly(feed, capsys):
    assert main(["translate", str(feed), "-q"]) == 0
    text = capsys.readouterr().out
    assert "E+" not in text
    data = json.loads(text, parse_float=Decimal)
    values = [v["eu"] for s in data["usage_segments"] for vs in s["values"] for v in vs if v and "eu" in v]
    assert values and all(isinstance(v, Decimal | int) for v in values)


def test_utility_mode_makes_statements(feed, tmp_path):
    out = tmp_path / "out.json"
    assert main(["translate", str(feed), "-q", "-o", str(out), "--bill-due-days", "21"]) == 0
    data = decode(out.read_bytes())
    assert data["bill_statements"], "35 days from 2025-01-01 hold one whole month"
    for statement in data["bill_statements"]:
        assert statement["amount_due"] == sum(c["amount"] for c in statement["new_charges"])
        sections = {s["cds_billsection_id"]: s for s in data["bill_sections"]}
        for charge in statement["new_charges"]:
            (section_id,) = charge["related_billsections"]
            total = next(d["cost"] for d in sections[section_id]["cost_details"] if "overall_total" in d["types"])
            assert charge["amount"] == total
            assert sections[section_id]["cds_billstatement_id"] == statement["cds_billstatement_id"]


@pytest.mark.parametrize(("args", "code", "message"), [
    (["translate", "/nonexistent/feed.xml"], 2, "no such file"),
    (["translate", "FEED", "--timezone", "Mars/Olympus_Mons"], 2, "unknown time zone"),
    (["translate", "FEED", "--now", "yesterday"], 2, "not an RFC 3339"),
    (["translate", "FEED", "--bill-due-days", "-1"], 2, "must not be negative"),
])
def test_translate_usage_errors(feed, capsys, args, code, message):
    args = [str(feed) if a == "FEED" else a for a in args]
    assert main(args) == code
    assert message in capsys.readouterr().err


def test_translate_reads_standard_input(feed):
    result = subprocess.run([sys.executable, "-m", "greenbridge", "translate", "-", "-q", "--no-progress"],
                            input=feed.read_bytes(), capture_output=True, check=False)
    assert result.returncode == 0, result.stderr
    assert len(decode(result.stdout)["service_points"]) == 2


def test_progress_bar_goes_to_stderr_only(feed, tmp_path):
    out = tmp_path / "out.json"
    result = subprocess.run([sys.executable, "-m", "greenbridge", "translate", str(feed), "-o", str(out),
                             "--progress"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert "reading" in result.stderr  # the bar's label
    decode(out.read_bytes())


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for command in ("generate", "scope", "translate", "validate"):
        assert command in text
