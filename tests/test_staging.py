"""The translator's scratch file never outlives its translation: closed, forgotten, or failed."""

from __future__ import annotations

import gc

import pytest

from cds.from_espi import TranslateOptions, translate
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
