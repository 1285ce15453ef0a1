"""greenbridge: a CDS gateway in front of legacy Green Button Connect My Data systems."""

__version__ = "0.1.0"
