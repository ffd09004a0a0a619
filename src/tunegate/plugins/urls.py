"""Where a night's pages live on the Airflow API server: one place for the extra link, the alert and the app.

No Airflow import at module level (the notifiers and the DAG files import this); :func:`api_base_url` reads
Airflow's configuration when it is called.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

from tunegate.plugins.nights import DATA_ROOT_ENV, is_dag_id, is_date

#: Where the plugin's app is mounted on the API server.
URL_PREFIX = "/tunegate"


def night_path(dag_id: str, date: str, page: str = "report") -> str:
    """``/tunegate/{dag_id}/{date}/{page}`` (URL-quoted), relative to the API server's base URL."""
    return f"{URL_PREFIX}/{quote(dag_id, safe='')}/{quote(date, safe='')}/{page}"


def night_url(base_url: str | None, dag_id: str, date: str, page: str = "report") -> str:
    """The page's absolute URL under ``base_url``; without one, the path alone (the Airflow UI is served from
    the same origin as the plugin, so a root-relative link opens there)."""
    return (base_url or "").rstrip("/") + night_path(dag_id, date, page)


def api_base_url() -> str | None:
    """Airflow's ``[api] base_url`` (``AIRFLOW__API__BASE_URL``) without its trailing slash; ``None`` when unset."""
    from airflow.sdk import conf  # noqa: TID251 (called from operators and notifiers only)

    value = str(conf.get("api", "base_url", fallback=None) or "").rstrip("/")
    return value or None


def night_of(run_dir: str | Path, data_root: str | Path | None = None) -> tuple[str, str] | None:
    """``(dag_id, date)`` when ``run_dir`` is ``{TUNEGATE_DATA_ROOT}/{dag_id}/{date}``, the only run directories
    the plugin serves; ``None`` for any other directory (a ``run_dir=`` given explicitly elsewhere)."""
    root = data_root if data_root is not None else os.environ.get(DATA_ROOT_ENV)
    if not root:
        return None
    try:
        rel = Path(run_dir).resolve().relative_to(Path(root).resolve())
    except ValueError:
        return None
    if len(rel.parts) != 2:
        return None
    dag_id, date = rel.parts
    return (dag_id, date) if is_dag_id(dag_id) and is_date(date) else None
