"""The ESPI → CDS translation (docs/mapping.md): ``translate(source, options)`` → ``Translation``."""

from bridge.from_espi.billing import StatementPolicy
from bridge.from_espi.translate import (
    LISTINGS,
    ReadingAccount,
    TranslateOptions,
    Translation,
    TranslationError,
    translate,
)

__all__ = ["LISTINGS", "ReadingAccount", "StatementPolicy", "TranslateOptions", "Translation", "TranslationError",
           "translate"]
