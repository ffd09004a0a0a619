"""Provider metadata for Airflow's providers manager (entry point ``apache_airflow_provider``).

Airflow calls :func:`get_provider_info` for every installed provider whenever it reads its
configuration, so this module imports nothing from Airflow and nothing heavy: it only names modules and
classes, which Airflow imports lazily when it needs them. Like the official providers' ``get_provider_info``,
the content is a static dict (tests/airflow/test_provider.py validates it against Airflow's schema and
imports every name it lists).
"""

from __future__ import annotations

from typing import Any

from tunegate import __version__


def get_provider_info() -> dict[str, Any]:
    """The provider metadata dict, in the shape of Airflow's ``provider_info.schema.json``."""
    return {
        "package-name": "tunegate",
        "name": "tunegate",
        "description": "Gate instruction-tuning corpora before fine-tuning: ingest, validate (Great Expectations), "
                       "scan for duplicates and poisoning, quarantine, and publish the accepted batch as an Asset.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "tunegate",
                "external-doc-url": "https://github.com/tunegate/tunegate/blob/main/docs/airflow.md",
                "tags": ["software"],
            }
        ],
        "operators": [
            {
                "integration-name": "tunegate",
                "python-modules": [
                    "tunegate.operators.ingest",
                    "tunegate.operators.validate",
                    "tunegate.operators.scan",
                    "tunegate.operators.gate",
                    "tunegate.operators.publish",
                    "tunegate.operators.review",
                ],
            }
        ],
        "hooks": [{"integration-name": "tunegate", "python-modules": ["tunegate.notifications.webhook"]}],
        # Slack and email reuse the slack/smtp providers' connection types.
        "connection-types": [
            {"hook-class-name": "tunegate.notifications.webhook.TunegateWebhookHook",
             "connection-type": "tunegate_webhook"},
        ],
        "notifications": [
            "tunegate.notifications.slack.TunegateSlackNotifier",
            "tunegate.notifications.email.TunegateEmailNotifier",
            "tunegate.notifications.webhook.TunegateWebhookNotifier",
        ],
    }
