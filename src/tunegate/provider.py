"""Provider metadata for Airflow's providers manager (entry point ``apache_airflow_provider``).

Airflow calls :func:`get_provider_info` for every installed provider whenever it reads its
configuration, so this module imports nothing from Airflow and nothing heavy: only names are listed
here, and Airflow imports the listed modules lazily when it needs them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunegate import __version__

_INTEGRATION = "tunegate"
_PACKAGE_DIR = Path(__file__).resolve().parent

#: Operator modules (each holds one operator class; see ``tunegate.operators``).
OPERATOR_MODULES: tuple[str, ...] = (
    "tunegate.operators.ingest",
    "tunegate.operators.validate",
    "tunegate.operators.scan",
    "tunegate.operators.gate",
    "tunegate.operators.publish",
)

#: Notifier classes (``BaseNotifier`` subclasses), as ``module.Class``. A notifier is listed only once
#: its module exists in the installed package, so metadata never points Airflow at a missing class.
NOTIFIER_CLASSES: tuple[str, ...] = (
    "tunegate.notifications.slack.TunegateSlackNotifier",
    "tunegate.notifications.email.TunegateEmailNotifier",
    "tunegate.notifications.webhook.TunegateWebhookNotifier",
)

#: Hooks with their own connection type (Slack and email reuse the slack/smtp providers' connections).
HOOKS: tuple[tuple[str, str], ...] = (
    ("tunegate.notifications.webhook.TunegateWebhookHook", "tunegate_webhook"),
)


def _module_exists(dotted: str) -> bool:
    parts = dotted.split(".")[1:]  # drop the leading "tunegate"
    base = _PACKAGE_DIR.joinpath(*parts)
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def get_provider_info() -> dict[str, Any]:
    """The provider metadata dict, in the shape of Airflow's ``provider_info.schema.json``."""
    hooks = [(cls, conn_type) for cls, conn_type in HOOKS if _module_exists(cls.rsplit(".", 1)[0])]
    return {
        "package-name": "tunegate",
        "name": "tunegate",
        "description": "Gate instruction-tuning corpora before fine-tuning: ingest, validate (Great Expectations), "
                       "scan for duplicates and poisoning, quarantine, and publish the accepted batch as an Asset.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": _INTEGRATION,
                "external-doc-url": "https://github.com/tunegate/tunegate/blob/main/docs/airflow.md",
                "tags": ["software"],
            }
        ],
        "operators": [{"integration-name": _INTEGRATION, "python-modules": list(OPERATOR_MODULES)}],
        "hooks": [{"integration-name": _INTEGRATION,
                   "python-modules": sorted({cls.rsplit(".", 1)[0] for cls, _ in hooks})}] if hooks else [],
        "connection-types": [{"hook-class-name": cls, "connection-type": conn_type} for cls, conn_type in hooks],
        "notifications": [name for name in NOTIFIER_CLASSES if _module_exists(name.rsplit(".", 1)[0])],
    }
