"""Exact Online triggers."""
