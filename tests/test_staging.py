"""The translator's scratch file never outlives its translation: closed, forgotten, or failed."""

from __future__ import annotations

import gc

import pytest

from bridge.from_espi import TranslateOptions, translate
from espi.errors import NoUsageDataError
from espi.generate import FeedSpec, generate_feed


@pytest.fixture
def feed() -> bytes:
    return "".join(generate_feed(FeedSpec(usage_points=2, days=2))).encode()


def test_closing_removes_the_scratch_file(feed, tmp_path):
    with translate(feed, TranslateOptions(scratch_dir=str(tmp_path))) as result:
        assert len(list(tmp_path.iterdir())) == 1
        assert sum(1 for _ in result.usage_segments()) > 0
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError, match="closed"):
        list(result.usage_segments())


def test_a_forgotten_translation_still_removes_it(feed, tmp_path):
    result = translate(feed, TranslateOptions(scratch_dir=str(tmp_path)))
    assert len(list(tmp_path.iterdir())) == 1
    del result
    gc.collect()
    assert list(tmp_path.iterdir()) == []


def test_a_rejected_document_leaves_nothing(tmp_path):
    with pytest.raises(NoUsageDataError):
        translate(b'<BatchList xmlns="http://naesb.org/espi"><resources>https://x/y</resources></BatchList>',
                  TranslateOptions(scratch_dir=str(tmp_path)))
    assert list(tmp_path.iterdir()) == []


def _alive(predicate) -> int:
    gc.collect()
    return sum(1 for obj in gc.get_objects() if predicate(obj))


def test_summaries_and_bill_sections_wait_in_the_scratch_file(tmp_path):
    """Memory must not grow with the years a feed covers: one UsageSummary per UsagePoint and month, and the bill
    section made from it, stay on disk and come back one UsagePoint (or one section) at a time."""
    from espi.usage import UsageSummary

    feed = "".join(generate_feed(FeedSpec(usage_points=2, days=120, interval=3600))).encode()
    with translate(feed, TranslateOptions(scratch_dir=str(tmp_path))) as result:
        assert _alive(lambda o: isinstance(o, UsageSummary)) == 0
        # a bill section's id is a string (the JSON Schema of Bill Sections, cds.schemas, has the same keys)
        assert _alive(lambda o: isinstance(o, dict) and isinstance(o.get("cds_billsection_id"), str)
                      and "usage_details" in o) == 0
        sections = result.bill_sections
        assert len(sections) == 8  # 2 UsagePoints × 4 whole months
        assert sections == sorted(sections, key=lambda s: (s["start_date"], s["cds_billsection_id"]))
        assert list(result.listing("bill_sections")) == sections  # re-iterable
        billing = [s for s in result.usage_segments() if any(f["id"].endswith("_billing") for f in s["formats"])]
        assert {s["related_billsections"][0] for s in billing} == {s["cds_billsection_id"] for s in sections}
    with pytest.raises(RuntimeError, match="closed"):
        result.bill_sections  # noqa: B018
