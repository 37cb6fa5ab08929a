"""Provider metadata read by Airflow's providers manager (entry point ``apache_airflow_provider``).

Must not import Airflow: the providers manager calls it while Airflow itself is starting.
The connection form is declared here (``conn-fields`` / ``ui-field-behaviour``) because the
Airflow 3.2+ UI reads it from provider info and ignores the old hook classmethods.
"""

from __future__ import annotations

from typing import Any

REGIONS = {
    "nl": "https://start.exactonline.nl",
    "be": "https://start.exactonline.be",
    "de": "https://start.exactonline.de",
    "co.uk": "https://start.exactonline.co.uk",
    "com": "https://start.exactonline.com",
    "es": "https://start.exactonline.es",
    "fr": "https://start.exactonline.fr",
}


def get_provider_info() -> dict[str, Any]:
    from airflow_provider_exactonline import __version__

    return {
        "package-name": "airflow-provider-exactonline",
        "name": "Exact Online",
        "description": "Exact Online (https://www.exact.com/) accounting: OAuth2 with worker-safe token "
        "rotation, OData paging, rate limits, incremental sync, upserts and sensors.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Exact Online",
                "external-doc-url": "https://start.exactonline.nl/docs/HlpRestAPIResources.aspx",
                "tags": ["service"],
            }
        ],
        "connection-types": [
            {
                "connection-type": "exactonline",
                "hook-class-name": "airflow_provider_exactonline.hooks.exactonline.ExactOnlineHook",
                "hook-name": "Exact Online",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port"],
                    "relabeling": {
                        "host": "Exact Online URL",
                        "login": "Client ID",
                        "password": "Client secret",
                    },
                    "placeholders": {
                        "host": "https://start.exactonline.nl (or nl, be, de, co.uk, com, es, fr)",
                        "login": "App Center client ID (a GUID)",
                        "password": "App Center client secret",
                        "extra": '{"division": 123456, "redirect_uri": "https://airflow.example.com/exactonline/callback"}',
                    },
                },
                "conn-fields": {
                    "division": {
                        "label": "Division",
                        "description": "Default Exact Online division (company) number; tasks may override it.",
                        "schema": {"type": ["integer", "null"], "minimum": 1},
                    },
                    "redirect_uri": {
                        "label": "Redirect URI",
                        "description": "Must equal the redirect URI registered in Exact's App Center; "
                        "for the Airflow UI flow use <airflow-url>/exactonline/callback.",
                        "schema": {"type": ["string", "null"], "format": "url"},
                    },
                    "access_token": {
                        "label": "Access token (written by the provider)",
                        "description": "Set by 'Connect to Exact Online'; leave empty.",
                        "schema": {"type": ["string", "null"], "format": "password"},
                    },
                    "refresh_token": {
                        "label": "Refresh token (written by the provider)",
                        "description": "Single-use; rotated by the provider on every refresh. Leave empty.",
                        "schema": {"type": ["string", "null"], "format": "password"},
                    },
                    "webhook_secret": {
                        "label": "Webhook secret",
                        "description": "The app's webhook secret from Exact's App Center; the webhook receiver "
                        "(<airflow-url>/exactonline-webhooks/<conn_id>) verifies callbacks with it.",
                        "schema": {"type": ["string", "null"], "format": "password"},
                    },
                },
            }
        ],
        "hooks": [
            {
                "integration-name": "Exact Online",
                "python-modules": ["airflow_provider_exactonline.hooks.exactonline"],
            }
        ],
        "operators": [
            {
                "integration-name": "Exact Online",
                "python-modules": [
                    "airflow_provider_exactonline.operators.exactonline",
                    "airflow_provider_exactonline.operators.webhooks",
                ],
            }
        ],
        "sensors": [
            {
                "integration-name": "Exact Online",
                "python-modules": ["airflow_provider_exactonline.sensors.exactonline"],
            }
        ],
        "triggers": [
            {
                "integration-name": "Exact Online",
                "python-modules": [
                    "airflow_provider_exactonline.triggers.exactonline",
                    "airflow_provider_exactonline.triggers.change",
                ],
            }
        ],
        "plugins": [
            {
                "name": "exactonline",
                "plugin-class": "airflow_provider_exactonline.plugins.exactonline.ExactOnlinePlugin",
            }
        ],
    }
