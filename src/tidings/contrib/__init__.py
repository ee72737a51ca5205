"""Integrations of tidings with other libraries (each behind its own extra)."""
