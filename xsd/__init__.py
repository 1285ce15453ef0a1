"""The official ESPI schemas, shipped as package data.

The ``.xsd`` files in this folder are byte copies of ``shared/espi/xsd`` (see PROVENANCE.md); this module only
locates them, so that validation never depends on the working directory or the network.
"""

from pathlib import Path

SCHEMA_DIR = Path(__file__).resolve().parent


def schema_path(name: str) -> Path:
    """Absolute path of a shipped schema file (``espi.xsd``, ``customer.xsd``, ``atom.xsd``, ``atom-lenient.xsd``)."""
    path = SCHEMA_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"no shipped schema named {name!r} in {SCHEMA_DIR}")
    return path
