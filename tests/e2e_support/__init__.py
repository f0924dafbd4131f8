"""Helpers for the end-to-end tests: the per-instrumentation subprocess and result matching."""
