"""Exact Online sensors."""
