"""``ReviewOperator``: one review decision on a gated night, made from Airflow (the core is
:class:`tunegate.core.review.Review`, the same as ``tunegate review release|confirm``)."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

from airflow.sdk import Asset, AssetAlias, Context
from airflow.sdk.exceptions import AirflowFailException

from tunegate._airflow import DATA_ROOT_ENV
from tunegate.core.review.records import CONFIRM, RELEASE
from tunegate.operators.assets import DEFAULT_PIPELINE, released_batch_alias
from tunegate.operators.base import TunegateBaseOperator, fail_on_tunegate_error

ACTIONS = (RELEASE, CONFIRM)
_PIPELINE = re.compile(r"^[A-Za-z0-9_.-]+$")  # a DAG id: never a path


class ReviewOperator(TunegateBaseOperator):
    """Apply one decision (``release`` or ``confirm``) to the quarantined records of a night.

    The night's run directory is ``{TUNEGATE_DATA_ROOT}/{pipeline}/{night}`` (``run_dir`` overrides it). The
    records are chosen by ``ids``, ``reason`` and/or ``phrase`` (all given ones must hold). Every decision is a
    line of the night's ``audit.jsonl`` that also names this task instance (``request``:
    ``airflow:{dag_id}/{run_id}/{task_id}``).

    * **release** writes the records to a follow-up file ``released/<seq>-<time>.parquet`` and adds an event
      for :func:`~tunegate.operators.assets.released_batch_asset` of ``pipeline`` to every ``AssetAlias`` in
      ``outlets`` (default: :func:`~tunegate.operators.assets.released_batch_alias`), its extra built by
      :func:`~tunegate.operators.assets.released_extra` from the audit line.
    * **confirm** adds the records to the history's known poison and emits nothing.

    Retries: the core never releases a record twice. When a try finds nothing left to release, the audit line
    of *this task instance* (an earlier try that released, then failed before Airflow recorded its event) is
    looked up and its event emitted again, with the same extra. Any other run with the same decision (a new
    run of the DAG) releases nothing, writes no audit line and emits no event; it succeeds and logs who
    released each record, when and where.

    Outlets must be aliases: Airflow emits an event for a concrete Asset outlet on every success, which would
    announce an empty release on every confirmation.

    :param action: ``release`` or ``confirm`` (templated).
    :param night: the night (``YYYY-MM-DD``, templated); needed unless ``run_dir`` is given.
    :param pipeline: the curation DAG whose night it is (templated); names the run directory and the Asset.
    :param ids: record ids (templated); ``reason``, ``phrase``: select by reason code or poison phrase.
    :param by: who decides (templated); empty: the user who triggered the DAG run.
    :param why: why (templated, required): the audit log keeps it.
    :param override: decide against an earlier decision (release a confirmed record, confirm a released one).
    :param history_dir: the history whose known poison changes; empty: the one the night was added to.
    """

    template_fields: Sequence[str] = ("action", "night", "pipeline", "ids", "reason", "phrase", "by", "why",
                                      "override", "history_dir", "run_dir")
    ui_color: str = "#f3e3c3"

    def __init__(self, *, action: str, why: str, night: str | None = None, pipeline: str = DEFAULT_PIPELINE,
                 ids: Sequence[str] | str | None = None, reason: str | None = None, phrase: str | None = None,
                 by: str | None = None, override: bool | str = False, history_dir: str | None = None,
                 run_dir: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("outlets", [released_batch_alias()])
        if any(isinstance(o, Asset) for o in kwargs["outlets"] or ()):
            raise ValueError("ReviewOperator outlets must be AssetAlias objects (e.g. released_batch_alias()): "
                             "Airflow emits an event for a concrete Asset on every success, confirmations included")
        super().__init__(run_dir=run_dir, **kwargs)
        self.action = action
        self.why = why
        self.night = night
        self.pipeline = pipeline
        self.ids = ids
        self.reason = reason
        self.phrase = phrase
        self.by = by
        self.override = override
        self.history_dir = history_dir

    def execute(self, context: Context) -> dict[str, Any]:
        from tunegate.core.review import Review, Selector
        from tunegate.operators.assets import released_batch_asset, released_extra

        action = str(self.action or "").strip()
        if action not in ACTIONS:
            raise AirflowFailException(f"action must be one of {', '.join(ACTIONS)}, got {self.action!r}")
        pipeline = str(self.pipeline or "")
        if not _PIPELINE.match(pipeline):
            raise AirflowFailException(f"pipeline must be a DAG id (letters, digits, _ . -), got {self.pipeline!r}")
        run_dir, night = self._where(pipeline)
        by = self._who(context)
        request = request_key(context)
        with fail_on_tunegate_error():
            selector = Selector(ids=_ids(self.ids), reason=_text(self.reason), phrase=_text(self.phrase))
            review = Review.open(run_dir)
            for warning in review.warnings:
                self.log.warning("review: %s", warning)
            decide = review.release if action == RELEASE else review.confirm
            result = decide(selector, by=by, why=str(self.why or ""), override=_flag(self.override),
                            history_dir=_text(self.history_dir), request=request)
        self.log.info("review: %s", result.message())
        out: dict[str, Any] = {"action": action, "run_dir": str(run_dir), "night": night, "by": by,
                               "request": request, "count": result.count, "skipped": len(result.skipped),
                               "event": None}
        entry = result.entry
        if action == RELEASE and entry is None:
            entry = Review.open(run_dir).decision_of(request, RELEASE)
            if entry is not None:
                self.log.info("review: this task's earlier try released %s (audit line %s); emitting its event "
                              "again", entry["released_file"]["path"], entry.get("line"))
        if action == RELEASE and entry is not None and isinstance(entry.get("released_file"), dict):
            extra = released_extra(entry, run_dir, night=night, pipeline=pipeline)
            asset = released_batch_asset(pipeline)
            aliases = [o for o in self.outlets or () if isinstance(o, AssetAlias)]
            for alias in aliases:
                context["outlet_events"][alias].add(asset, extra=extra)
            self.log.info("review: %d record(s) in %s announced on %s (through %s)", extra["count"],
                          extra["released_uri"], asset.name, [a.name for a in aliases] or "no outlet")
            out["event"] = {k: extra[k] for k in ("released_uri", "released_sha256", "count", "seq")}
        return out

    def _where(self, pipeline: str) -> tuple[Path, str]:
        """The run directory and the night's date."""
        if self.run_dir:
            run_dir = Path(self.run_dir)
            return run_dir, _text(self.night) or run_dir.name
        night = _text(self.night)
        if night is None:
            raise AirflowFailException("say which night to review: night=YYYY-MM-DD (or run_dir=)")
        try:
            if date.fromisoformat(night).isoformat() != night:
                raise ValueError(night)
        except ValueError:
            raise AirflowFailException(f"night must be a date YYYY-MM-DD, got {night!r}") from None
        root = os.environ.get(DATA_ROOT_ENV)
        if not root:
            raise AirflowFailException(f"{DATA_ROOT_ENV} is not set: set it to the directory the curation DAG "
                                       "writes its nights under, or pass run_dir= to the ReviewOperator")
        return Path(root) / pipeline / night, night

    def _who(self, context: Context) -> str:
        by = _text(self.by) or _text(getattr(context.get("dag_run"), "triggering_user_name", None))
        if by is None:
            raise AirflowFailException("say who decides: pass by= (this run has no triggering user to default to); "
                                       "the audit log keeps it")
        return by


def request_key(context: Context) -> str:
    """This task instance, as the audit log names the request: the same for every try and clear of it."""
    ti = context["ti"]
    key = f"airflow:{ti.dag_id}/{ti.run_id}/{ti.task_id}"
    map_index = getattr(ti, "map_index", -1)
    return f"{key}/{map_index}" if map_index is not None and map_index >= 0 else key


def _text(value: Any) -> str | None:
    text = "" if value is None else str(value).strip()
    return text or None


def _ids(value: Sequence[str] | str | None) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(str(v) for v in value)


def _flag(value: bool | str) -> bool:
    if isinstance(value, str):
        if value.strip().lower() not in ("true", "false", ""):
            raise AirflowFailException(f"override must be true or false, got {value!r}")
        return value.strip().lower() == "true"
    return bool(value)
