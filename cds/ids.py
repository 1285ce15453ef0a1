"""Stable, opaque CDS object ids (mapping decision D12/D13, docs/mapping.md "Stable ids").

``cds_<type>_id = hex(HMAC-SHA256(secret, "gb1|<type>|<custodian>|<natural key>"))[:32]``

The same source always yields the same ids, so re-ingesting a file is an idempotent upsert. The HMAC is keyed
because natural keys contain customer identifiers (account numbers, meter serials and customer ids sit in ESPI
hrefs): a plain hash of such low-entropy values could be reversed by brute force, and GBA forbids PII in ids.
"""

from __future__ import annotations

import hashlib
import hmac

#: Version tag inside every HMAC input; changing the id scheme means changing this.
ID_SCHEME = "gb1"
ID_LENGTH = 32


class IdFactory:
    """Makes ids for one custodian. ``secret`` is the gateway's id secret (never rotated: it names objects)."""

    def __init__(self, secret: bytes | str, custodian: str):
        if isinstance(secret, str):
            secret = secret.encode()
        if not secret:
            raise ValueError("the id secret must not be empty")
        self._secret = secret
        self.custodian = custodian

    def make(self, object_type: str, *natural_key: str | int) -> str:
        """An id for ``object_type`` (e.g. "servicepoint") from the parts of its natural key."""
        message = "|".join((ID_SCHEME, object_type, self.custodian, *map(str, natural_key)))
        digest = hmac.new(self._secret, message.encode(), hashlib.sha256).hexdigest()
        return digest[:ID_LENGTH]
