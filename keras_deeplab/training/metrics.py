"""Metrics (being written)."""
