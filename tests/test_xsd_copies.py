"""The shipped schemas are exactly the official files: byte-identical to the team's shared copy (when it is
beside the checkout) and matching the sha256 values recorded in xsd/PROVENANCE.md (always).

Validation results are only as trustworthy as the schemas behind them; a stray edit or a re-encoded file would
silently change what "valid" means.
"""

from __future__ import annotations

import hashlib
import re

import pytest
from conftest import REPO

from xsd import SCHEMA_DIR, schema_path

SHARED_XSD = REPO.parent / "shared" / "espi" / "xsd"
SHIPPED = ("espi.xsd", "customer.xsd", "atom.xsd", "atom-lenient.xsd")


def recorded_hashes() -> dict[str, str]:
    """file → sha256 from the PROVENANCE.md table rows (`` `name.xsd` | … | `hex` |``)."""
    text = (SCHEMA_DIR / "PROVENANCE.md").read_text(encoding="utf-8")
    hashes: dict[str, str] = {}
    for line in text.splitlines():
        match = re.match(r"\|\s*`([\w.-]+\.xsd)`\s*\|.*\|\s*`([0-9a-f]{64})`\s*\|\s*$", line)
        if match:
            hashes[match.group(1)] = match.group(2)
    return hashes


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_provenance_lists_exactly_the_shipped_schemas():
    assert set(recorded_hashes()) == set(SHIPPED)
    assert {path.name for path in SCHEMA_DIR.glob("*.xsd")} == set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_schema_matches_recorded_sha256(name: str):
    assert sha256(schema_path(name)) == recorded_hashes()[name]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_schema_is_byte_identical_to_shared_copy(name: str):
    shared = SHARED_XSD / name
    if not shared.is_file():
        pytest.skip(f"shared schemas not available ({SHARED_XSD})")
    assert schema_path(name).read_bytes() == shared.read_bytes()


def test_lenient_and_strict_atom_differ_where_documented():
    """The difference that matters: atom:link/@type is required in atom.xsd, optional in atom-lenient.xsd."""
    import xmlschema

    from espi.validation import offline_schema_options

    def link_type_use(name: str) -> str:
        schema = xmlschema.XMLSchema(schema_path(name), **offline_schema_options())
        return schema.types["linkType"].attributes["type"].use

    assert link_type_use("atom.xsd") == "required"
    assert link_type_use("atom-lenient.xsd") == "optional"
