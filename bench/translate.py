"""Benchmark: ``greenbridge translate`` against a bare lxml iterparse of the same bytes, and its peak memory.

For a real 15-minute sample and for a generated feed (100 UsagePoints × 1 year × 15 minutes by default), at 1×
and 10× the input size (the sample: its readings repeated ten times over later days; the generated feed: ten times
the days, and separately ten times the UsagePoints), each measurement runs in a fresh process (so peak RSS is
that run's own):

* ``iterparse``: ``for _, element in lxml.etree.iterparse(path): element.clear()``, the floor for any parser
  that looks at every element from Python (the cheapest loop, so the ratio is conservative);
* ``parse``: greenbridge's streaming reader alone (``espi.atom.FeedReader``);
* ``translate``: the whole command, ``greenbridge translate FILE -o OUT`` (parse, stage, link graph, segments,
  JSON written to disk).

Times start after each process has imported what it needs (lxml for the baseline; greenbridge for the others):
imports are a one-time cost, printed separately.

Figures are ratios measured side by side in one run (the machine is shared and noisy). Goals: translate within
3× of bare iterparse; peak RSS at 10× input within 1.3× of 1×.

    .venv/bin/python bench/translate.py                      # the full run (15 GB of scratch; about an hour)
    .venv/bin/python bench/translate.py --usage-points 10    # a quicker one
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from lxml import etree

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SAMPLE = REPO.parent / "shared" / "espi" / "samples" / "sdk_15minLP_15Days.xml"

CHILD = r"""
import json, sys, time
mode, path, out = sys.argv[1:4]
started = time.perf_counter()
# Imports are a one-time process cost: they are reported separately, not counted in the work.
if mode == "iterparse":
    from lxml import etree
elif mode == "parse":
    from espi.atom import FeedReader
else:
    import bridge.from_espi.translate
    import greenbridge.commands.translate
    from greenbridge.cli import main
startup = time.perf_counter() - started
start = time.perf_counter()
if mode == "iterparse":
    for _event, element in etree.iterparse(path):
        element.clear()  # the cheapest loop: a conservative baseline (its memory is not what is measured)
elif mode == "parse":
    for _item in FeedReader(path):
        pass
else:
    code = main(["translate", path, "-o", out, "-q", "--no-progress", "--now", "2026-01-01T00:00:00Z"])
    assert code == 0, code
seconds = time.perf_counter() - start
# VmHWM: the peak RSS of this process's own address space. (getrusage's ru_maxrss would also count the parent's
# RSS at fork time, which Linux carries across exec.)
with open("/proc/self/status") as status:
    peak_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print(json.dumps({"seconds": seconds, "startup": startup, "rss_kb": peak_kb}))
"""

def measure(mode: str, path: Path, workdir: Path, repeat: int) -> dict:
    runs = []
    for _ in range(repeat):
        out = workdir / "out.json"
        result = subprocess.run([sys.executable, "-c", CHILD, mode, str(path), str(out)], capture_output=True,
                                text=True, cwd=REPO, check=False)
        if result.returncode != 0:
            raise SystemExit(f"{mode} {path} failed:\n{result.stderr}")
        runs.append(json.loads(result.stdout.strip().splitlines()[-1]))
        out.unlink(missing_ok=True)
    return {"seconds": statistics.median(r["seconds"] for r in runs),
            "startup": statistics.median(r["startup"] for r in runs),
            "rss_mb": max(r["rss_kb"] for r in runs) / 1024}


def replicate_sample(sample: Path, target: Path, times: int) -> None:
    """The sample with its IntervalBlock entries repeated ``times`` times, shifted in time one span further each
    time (so every reading is new), under new self hrefs; everything else once."""
    tree = etree.parse(str(sample), etree.XMLParser(resolve_entities=False, no_network=True))
    root = tree.getroot()
    block_entries = [e for e in root if isinstance(e.tag, str) and e.tag.endswith("entry")
                     and e.xpath(".//*[local-name()='IntervalBlock']")]
    starts = [int(s) for e in block_entries for s in e.xpath(".//*[local-name()='start']/text()")]
    ends = [int(s) + int(d) for e in block_entries for s, d in zip(
        e.xpath(".//*[local-name()='timePeriod']/*[local-name()='start']/text()"),
        e.xpath(".//*[local-name()='timePeriod']/*[local-name()='duration']/text()"), strict=True)]
    span = max(ends) - min(starts)
    for k in range(1, times):
        for entry in block_entries:
            clone = copy.deepcopy(entry)
            for start in clone.xpath(".//*[local-name()='start']"):
                start.text = str(int(start.text) + k * span)
            for link in clone.xpath("*[local-name()='link'][@rel='self']"):
                link.set("href", f"{link.get('href')}-copy{k}")
            root.append(clone)
    tree.write(str(target), xml_declaration=True, encoding="UTF-8")


def generate(path: Path, usage_points: int, days: int) -> None:
    subprocess.run([sys.executable, "-m", "greenbridge", "generate", "--usage-points", str(usage_points),
                    "--days", str(days), "-o", str(path)], cwd=REPO, check=True, capture_output=True)


def readings(path: Path) -> int:
    count = 0
    for _event, element in etree.iterparse(str(path), tag="{*}IntervalReading"):
        count += 1
        element.clear()
        parent = element.getparent()
        while element.getprevious() is not None:  # free what was read: this process stays small
            del parent[0]
    return count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sample", type=Path, default=DEFAULT_SAMPLE, help="a real 15-minute Green Button file")
    parser.add_argument("--usage-points", type=int, default=100)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--repeat-small", type=int, default=5, help="runs per measurement of the sample (median)")
    parser.add_argument("--workdir", type=Path, help="scratch directory (default: a temporary one, removed)")
    args = parser.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="greenbridge-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    inputs: list[tuple[str, str, Path, int]] = []
    try:
        if args.sample.is_file():
            replicated = workdir / "sample-10x.xml"
            replicate_sample(args.sample, replicated, 10)
            inputs += [(args.sample.name, "1x", args.sample, args.repeat_small),
                       (args.sample.name, "10x", replicated, args.repeat_small)]
        else:
            print(f"(sample {args.sample} not found: skipping the real-file rows)", file=sys.stderr)
        # 10x two ways: ten times the readings (same UsagePoints, ten times the days), and ten times the
        # UsagePoints (same days), because memory must stay flat in the first and small in the second.
        label = f"generated {args.usage_points} UP x {args.days} d x 15 min"
        variants = [("1x", args.usage_points, args.days), ("10x days", args.usage_points, args.days * 10),
                    ("10x UPs", args.usage_points * 10, args.days)]
        for scale, usage_points, days in variants:
            path = workdir / f"generated-{scale.replace(' ', '-')}-{usage_points}-{days}.xml"
            if not path.is_file():  # the generator is deterministic: a file from an earlier run is the same
                print(f"generating {label} at {scale}…", file=sys.stderr)
                generate(path, usage_points, days)
            inputs.append((label, scale, path, 1))

        rows = []
        for name, scale, path, repeat in inputs:
            print(f"measuring {name} {scale}…", file=sys.stderr)
            row = {"input": name, "scale": scale, "mb": path.stat().st_size / 1e6, "readings": readings(path)}
            for mode in ("iterparse", "parse", "translate"):
                row[mode] = measure(mode, path, workdir, repeat)
            rows.append(row)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)

    print()
    print(f"{'input':38} {'scale':>5} {'MB':>8} {'readings':>11} {'iterparse s':>11} {'parse s':>8} "
          f"{'translate s':>11} {'ratio':>6} {'RSS MB':>7}")
    for row in rows:
        ratio = row["translate"]["seconds"] / row["iterparse"]["seconds"]
        print(f"{row['input'][:38]:38} {row['scale']:>5} {row['mb']:8.1f} {row['readings']:11,d} "
              f"{row['iterparse']['seconds']:11.2f} {row['parse']['seconds']:8.2f} "
              f"{row['translate']['seconds']:11.2f} {ratio:6.2f} {row['translate']['rss_mb']:7.1f}")
    startup = statistics.median(r["translate"]["startup"] for r in rows)
    print(f"\n(process startup and imports of the translate command, not counted above: {startup:.2f} s)")
    print()
    for name in dict.fromkeys(r["input"] for r in rows):
        group = [r for r in rows if r["input"] == name]
        one = next(r for r in group if r["scale"] == "1x")
        worst = max(r["translate"]["seconds"] / r["iterparse"]["seconds"] for r in group)
        memory = "; ".join(f"peak RSS {r['scale']} / 1x = {r['translate']['rss_mb'] / one['translate']['rss_mb']:.2f}"
                           for r in group if r is not one)
        print(f"{name}: translate / bare iterparse ≤ {worst:.2f} (goal ≤ 3); {memory} (goal ≤ 1.3)")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    raise SystemExit(main())
