"""Everything Green Button (NAESB REQ.21 ESPI): feed parsing, validation, code tables, scope strings, notifications.

This package depends on nothing else of greenbridge's.
"""
