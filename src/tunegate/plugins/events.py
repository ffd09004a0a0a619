"""A release made on the review page reaches the fine-tuning side the way the review DAG's does: as an event of
the pipeline's released Asset (``{dag_id}_released``), whose extra is built from the release's audit line by
:func:`tunegate.operators.assets.released_extra`.

The event is registered through Airflow's own ``asset_manager`` in the API server's metadata-database session,
as Airflow's ``POST /api/v2/assets/events`` does: consumers scheduled on the Asset (``tunegate_finetune``) are
queued. An Asset that no DAG references is not in the database: nothing consumes releases of that pipeline, and
the page says so instead of failing the decision that the audit log already holds.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def announce_release(entry: dict[str, Any] | None, run_dir: Path, *, dag_id: str, date: str) -> str:
    """Emit the released-Asset event of the release ``entry`` (an audit line); a line for the page."""
    if entry is None or not isinstance(entry.get("released_file"), dict):
        return ""
    from airflow.assets.manager import asset_manager  # noqa: TID251 (runs inside the API server)
    from airflow.models.asset import AssetModel  # noqa: TID251
    from airflow.utils.session import create_session  # noqa: TID251
    from sqlalchemy import select

    from tunegate.operators.assets import released_batch_asset, released_extra

    asset = released_batch_asset(dag_id)
    extra = released_extra(entry, run_dir, night=date, pipeline=dag_id)
    try:
        with create_session() as session:
            model = session.scalar(select(AssetModel).where(AssetModel.name == asset.name,
                                                            AssetModel.uri == asset.uri))
            if model is None:
                log.warning("tunegate: release of %s/%s not announced: no DAG references the Asset %s", dag_id,
                            date, asset.name)
                return f"No DAG consumes the Asset {asset.name}: the release is recorded, but nothing was announced."
            event = asset_manager.register_asset_change(asset=model, extra=extra, source_is_api=True,
                                                        session=session)
    except Exception:  # the release is committed and audited: say it was not announced rather than fail the page
        log.exception("tunegate: release %s of %s/%s recorded but not announced", extra["seq"], dag_id, date)
        return (f"Announcing failed: the release is recorded, but no event of {asset.name} was registered (see the "
                "API server's log; docs/serving.md says how to announce it by hand).")
    if event is None:
        return f"The Asset {asset.name} refused the event: the release is recorded, but nothing was announced."
    log.info("tunegate: release %s of %s/%s announced as an event of %s", extra["seq"], dag_id, date, asset.name)
    return f"Announced to the fine-tuning side as an event of {asset.name}."
