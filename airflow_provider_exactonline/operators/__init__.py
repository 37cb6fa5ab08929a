"""Exact Online operators."""
