"""Apache Airflow provider for Exact Online."""

__version__ = "0.1.0"
