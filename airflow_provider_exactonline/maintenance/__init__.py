"""Maintenance DAGs shipped with the provider."""
