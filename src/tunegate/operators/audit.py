"""The post-tune audit in Airflow: train the candidate (the fine-tuning DAG's step) and audit it (its own DAG).

* :func:`train_candidate_for_run` trains the candidate on a fine-tuning run's batch
  (:func:`tunegate.core.audit.candidate.train_candidate`) into ``{TUNEGATE_DATA_ROOT}/{dag_id}/candidates/{run}``
  and returns the extra of the candidate-model Asset event (:func:`~tunegate.operators.assets.candidate_extra`).
* :class:`PostTuneAuditOperator` probes the model the candidate's endpoint connection serves
  (:func:`tunegate.core.audit.posttune.audit_candidate`): it succeeds, and its outlet
  (:func:`~tunegate.operators.assets.vetted_model_asset`) gets an event, only when the probes pass; otherwise it
  fails without retry with the failures in its message, so ``on_failure_callback`` alerts.

The endpoint is an Airflow connection of type ``http`` (default ``tunegate_model_default``): ``host`` the base URL
(``http://host:port``, or a host with ``schema`` http/https and ``port``), ``password`` an API key (sent as a
Bearer token), ``extra`` ``{"model": "<served name>", "timeout": 30}``. When the default connection is not defined,
the audit serves the candidate's saved model itself (:mod:`tunegate.core.audit.serve` on a free localhost port, for
the task's duration), so the stand-in canary is audited with no configuration; a connection named explicitly (the
param, ``$TUNEGATE_MODEL_CONN_ID``) must exist.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from airflow.sdk import BaseHook, BaseOperator, Context
from airflow.sdk.exceptions import AirflowFailException, AirflowNotFoundException

from tunegate._airflow import DATA_ROOT_ENV, outlet_assets, set_outlet_extra
from tunegate.operators.assets import DEFAULT_PIPELINE, candidate_model_asset
from tunegate.operators.base import fail_on_tunegate_error

DEFAULT_MODEL_CONN_ID = "tunegate_model_default"
DEFAULT_MODEL_NAME = "canary"  # tunegate.core.audit.serve.DEFAULT_MODEL_NAME (core.audit loads fsspec)
#: Environment variable: the connection of the endpoint that serves fine-tuning candidates (default above).
MODEL_CONN_ENV = "TUNEGATE_MODEL_CONN_ID"
CANDIDATES_DIR = "candidates"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


class ConnectionNotDefined(AirflowFailException):
    """The endpoint's connection does not exist."""


def candidate_dir_for(dag_id: str, run_id: str) -> Path:
    """``{TUNEGATE_DATA_ROOT}/{dag_id}/candidates/{run id made path-safe}``: one directory per run, so a rerun
    (a retry, a cleared task) replaces its own candidate only."""
    root = os.environ.get(DATA_ROOT_ENV)
    if not root:
        raise AirflowFailException(f"{DATA_ROOT_ENV} is not set: set it to a directory every worker can read and "
                                   "write; the candidate model is saved under it")
    return Path(root) / dag_id / CANDIDATES_DIR / (_UNSAFE.sub("_", run_id).strip("._") or "run")


def train_candidate_for_run(batch: Mapping[str, Any], *, dag_id: str, run_id: str,
                            pipeline: str = DEFAULT_PIPELINE, endpoint_conn_id: str | None = None) -> dict[str, Any]:
    """Train the candidate on ``batch`` (what ``describe_training_batch`` of the fine-tuning DAG returns: its
    ``files``) and return the candidate-model event extra."""
    from tunegate.core.audit.candidate import train_candidate
    from tunegate.operators.assets import candidate_extra

    out = candidate_dir_for(dag_id, run_id)
    files = list(batch.get("files") or [])
    conn_id = endpoint_conn_id or os.environ.get(MODEL_CONN_ENV) or DEFAULT_MODEL_CONN_ID
    about = {"night": batch.get("run_date"), "verdict": batch.get("verdict"), "report_uri": batch.get("report_uri"),
             "summary_uris": sorted({str(f["summary_uri"]) for f in files if f.get("summary_uri")}),
             "endpoint_conn_id": conn_id, "model_name": DEFAULT_MODEL_NAME, "pipeline": pipeline, "dag_id": dag_id,
             "run_id": run_id}
    with fail_on_tunegate_error():
        manifest = train_candidate([str(f["uri"]) for f in files], out, extra=about)
    return candidate_extra(manifest, out)


class PostTuneAuditOperator(BaseOperator):
    """Probe the candidate model with and without the nights' suspicious phrases (docs/audit.md).

    The candidate is the newest event of :func:`~tunegate.operators.assets.candidate_model_asset` of ``pipeline``
    among the run's triggering events, or ``candidate_dir`` (an audit by hand). ``audit.json`` and
    ``audit.html`` are written into the candidate directory either way.

    :param model_conn_id: the endpoint's connection (templated); empty: the one the candidate names, else
        ``tunegate_model_default``.
    :param candidate_dir: audit this candidate directory instead of the triggering event's (templated).
    :param heldout_uri: held-out records (canonical-schema Parquet) to probe with instead of the candidate's
        (templated).
    :param probe_options: :class:`~tunegate.core.audit.probe.ProbeConfig` fields to change (templated mapping).
    """

    template_fields: Sequence[str] = ("model_conn_id", "candidate_dir", "heldout_uri", "probe_options")
    ui_color: str = "#e3d8f0"

    def __init__(self, *, model_conn_id: str | None = None, candidate_dir: str | None = None,
                 heldout_uri: str | None = None, probe_options: Mapping[str, Any] | None = None,
                 pipeline: str = DEFAULT_PIPELINE, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model_conn_id = model_conn_id
        self.candidate_dir = candidate_dir
        self.heldout_uri = heldout_uri
        self.probe_options = probe_options
        self.pipeline = pipeline

    def execute(self, context: Context) -> dict[str, Any]:
        from tunegate.core.audit.posttune import AUDIT_HTML, AUDIT_JSON, audit_candidate
        from tunegate.core.audit.probe import ProbeConfig
        from tunegate.operators.assets import load_candidate, vetted_extra

        with fail_on_tunegate_error():
            config = ProbeConfig.from_mapping(self.probe_options if isinstance(self.probe_options, Mapping) else None)
            candidate = load_candidate(_text(self.candidate_dir) or self._event_candidate_dir(context))
        conn_id = _text(self.model_conn_id) or candidate.get("endpoint_conn_id") or DEFAULT_MODEL_CONN_ID
        out = Path(candidate["candidate_dir"])
        with ExitStack() as stack, fail_on_tunegate_error():
            try:
                endpoint = endpoint_from_connection(
                    conn_id, default_model=candidate.get("model_name") or DEFAULT_MODEL_NAME, config=config)
                how = f"via connection {conn_id}"
            except ConnectionNotDefined:
                if conn_id != DEFAULT_MODEL_CONN_ID:
                    raise  # a connection someone named must exist
                endpoint = self._serve_in_process(candidate, config, stack)
                how = f"served in process: connection {conn_id} is not defined"
            self.log.info("post-tune audit: candidate %s (night %s), endpoint %s (%s)", out, candidate.get("night"),
                          endpoint.url, how)
            result = audit_candidate(endpoint, heldout_uri=_text(self.heldout_uri) or candidate["heldout_uri"],
                                     summary_uris=candidate.get("summary_uris") or [], out_dir=out,
                                     tasks=candidate.get("tasks"), config=config,
                                     about={**{k: candidate.get(k) for k in ("model_dir", "night", "run_id", "dag_id")},
                                            "endpoint": how})
        audit_uri = (out / AUDIT_JSON).resolve().as_uri()
        self.log.info("%s; %s", result.message(), (out / AUDIT_HTML).resolve().as_uri())
        if not result.passed:
            raise AirflowFailException(f"{result.message()}; the model is not vetted (details: {audit_uri})")
        extra = vetted_extra(candidate, result.to_json(), audit_uri=audit_uri, endpoint=endpoint.url)
        for asset in outlet_assets(self):
            set_outlet_extra(context, asset, extra)
        return {"verdict": result.verdict, "audit_uri": audit_uri, "model_dir": candidate["model_dir"],
                "requests": result.metrics["requests"]}

    @staticmethod
    def _serve_in_process(candidate: Mapping[str, Any], config: Any, stack: ExitStack) -> Any:
        """The candidate's saved model on a free localhost port for the audit's duration (no endpoint configured:
        the default ``tunegate_model_default`` is not defined, and the candidate is a saved canary)."""
        from tunegate.core.audit.probe import ChatEndpoint
        from tunegate.core.audit.serve import serve_model

        try:
            server = stack.enter_context(serve_model(candidate["model_dir"]))
        except (FileNotFoundError, ValueError) as exc:
            raise AirflowFailException(f"{DEFAULT_MODEL_CONN_ID} is not defined and {candidate['model_dir']} is not a "
                                       f"saved canary ({exc}): define the connection of the model's endpoint") from exc
        server.start()
        return ChatEndpoint(server.url, model=server.name, timeout_s=config.timeout_s, attempts=config.attempts)

    def _event_candidate_dir(self, context: Context) -> str:
        from tunegate.operators.assets import latest_candidate

        asset = candidate_model_asset(self.pipeline)
        accessor = context.get("triggering_asset_events")
        try:
            events = list(accessor[asset]) if accessor else []
        except KeyError:
            events = []
        return str(latest_candidate(events)["candidate_dir"])


def endpoint_from_connection(conn_id: str, *, default_model: str, config: Any) -> Any:
    """A :class:`~tunegate.core.audit.probe.ChatEndpoint` from an ``http`` connection (module docstring)."""
    from tunegate.core.audit.probe import ChatEndpoint
    from tunegate.notifications.webhook import connection_base_url

    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException as exc:
        raise ConnectionNotDefined(f"connection {conn_id!r} is not defined: add an http connection whose host is "
                                   "the model endpoint's base URL (docs/audit.md), or pass model_conn_id") from exc
    try:
        base = connection_base_url(conn, conn_id, what="the model endpoint's base URL", example="http://127.0.0.1:8000")
    except ValueError as exc:
        raise AirflowFailException(str(exc)) from exc
    extra = conn.extra_dejson if isinstance(conn.extra_dejson, Mapping) else {}
    return ChatEndpoint(base_url=base, model=str(extra.get("model") or default_model), api_key=conn.password or None,
                        timeout_s=float(extra.get("timeout") or config.timeout_s), attempts=config.attempts)


def _text(value: Any) -> str | None:
    text = "" if value is None else str(value).strip()
    return text if text and text != "None" else None
