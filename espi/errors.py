"""The library's error types. Every error that bad input can cause is an ``EspiError``.

Errors that point into a document carry the source name and line, and print as ``SOURCE:LINE: message``, the
form editors and CI logs understand.
"""

from __future__ import annotations


class EspiError(Exception):
    """Base class of every error greenbridge's Green Button library raises for bad input."""


class DocumentError(EspiError):
    """A problem at a place in a document: ``source`` names the file (or stream), ``line`` is 1-based or None."""

    def __init__(self, message: str, source: str | None = None, line: int | None = None):
        self.message = message
        self.source = source
        self.line = line
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = self.source or "<input>"
        if self.line:
            where = f"{where}:{self.line}"
        return f"{where}: {self.message}"


class XmlSecurityError(DocumentError):
    """The document uses an XML feature we refuse outright (DOCTYPE, entities, excessive depth)."""


class XmlSyntaxError(DocumentError):
    """The document is not well-formed XML."""


class NotEspiError(DocumentError):
    """Well-formed XML, but not a Green Button document (wrong root, or no resource we know)."""


class NoUsageDataError(DocumentError):
    """A Green Button document that holds no usage data (e.g. a BatchList or ApplicationInformation)."""

    def __init__(self, message: str, source: str | None = None, line: int | None = None, kind: str = ""):
        self.kind = kind
        super().__init__(message, source, line)
