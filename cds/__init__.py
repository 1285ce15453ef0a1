"""Everything CDS (LF Energy Connected Data Specifications): object shapes, ids and the ESPI → CDS translation."""
