"""XML namespaces of Green Button documents (ESPI REQ.21 §1: Atom envelope, espi usage, customer PII)."""

ATOM = "http://www.w3.org/2005/Atom"
ESPI = "http://naesb.org/espi"
CUSTOMER = "http://naesb.org/espi/customer"
XSI = "http://www.w3.org/2001/XMLSchema-instance"

#: Namespaces under which an ESPI resource may appear. Real files also use no namespace at all.
RESOURCE_NAMESPACES = (ESPI, CUSTOMER, "")


def local_name(tag: str) -> str:
    """``{ns}name`` → ``name`` (lxml's Clark notation)."""
    return tag.rpartition("}")[2]


def namespace_of(tag: str) -> str:
    """``{ns}name`` → ``ns``; ``''`` for an element in no namespace."""
    return tag[1:].partition("}")[0] if tag.startswith("{") else ""
