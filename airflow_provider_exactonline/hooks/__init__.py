from airflow_provider_exactonline.hooks.exactonline import ExactOnlineHook

__all__ = ["ExactOnlineHook"]
