"""The web process (Starlette): CDS metadata, OAuth and data APIs. Routes only; logic lives in cds/ and espi/."""
