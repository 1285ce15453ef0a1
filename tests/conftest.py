"""Shared test helpers.

The public Green Button samples live in ../shared/espi/samples (mixed licences: read in place, never copied into
the repository). Tests that need them use the ``sample`` fixture and are skipped cleanly when they are absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SAMPLES_DIR = Path(os.environ.get("GREENBRIDGE_SAMPLES", REPO.parent / "shared" / "espi" / "samples"))
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def sample_files() -> list[Path]:
    """Every XML sample, sorted; empty when the shared samples are not beside the checkout."""
    if not SAMPLES_DIR.is_dir():
        return []
    return sorted(SAMPLES_DIR.glob("*.xml"))


@pytest.fixture
def sample():
    """``sample("cmdtest_Gas.xml")`` → Path, or skips the test when the shared samples are absent."""

    def locate(name: str) -> Path:
        path = SAMPLES_DIR / name
        if not path.is_file():
            pytest.skip(f"shared sample {name} not available ({SAMPLES_DIR})")
        return path

    return locate
