"""The bridge: the only package that knows both standards.

``espi`` knows Green Button and nothing of ours; ``cds`` knows CDS and nothing of Green Button. What joins them lives
here: the ESPI → CDS translation (``from_espi``), a custodian's scope strings as CDS scope descriptions
(``custodian_scopes``) and CDS requests as scope strings (``legacy_scope``), the upstream authorizations and their
tokens (``upstream``), BatchList notifications turned into jobs (``notifications``), the ingest of translated data
into the store (``ingest``), the grant lifecycle driven by upstream events (``lifecycle``) and the configuration of a
deployment that every process reads (``config``).
"""
