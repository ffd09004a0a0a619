"""The post-tune audit of one candidate model, from files: held-out prompts, the nights' summaries, an endpoint.

:func:`audit_candidate` reads the held-out records (:mod:`tunegate.core.audit.candidate`), the suspicious
phrases the nights' poison scans reported (their ``summary.json``), probes the endpoint
(:func:`tunegate.core.audit.probe.probe`) and writes ``audit.json`` (the result and what it was measured on)
and ``audit.html`` (a small page, every text escaped, nothing loaded from the network) into the candidate
directory, atomically. The caller decides what a failed audit does (the Airflow operator fails its task).
"""

from __future__ import annotations

import html
import logging
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tunegate.core.audit.probe import (
    ChatEndpoint,
    ProbeConfig,
    ProbeResult,
    phrases_from_summaries,
    probe,
    prompts_from_table,
)
from tunegate.core.io import atomic_write, write_json_atomic

log = logging.getLogger(__name__)

AUDIT_JSON = "audit.json"
AUDIT_HTML = "audit.html"


def read_heldout(uri: str) -> Any:
    """The held-out records (a canonical-schema Parquet file) as a pyarrow table."""
    import fsspec
    import pyarrow.parquet as pq

    with fsspec.open(uri, "rb") as f:
        return pq.read_table(f, columns=["id", "instruction", "input", "task"])


def read_summaries(uris: Iterable[str]) -> list[dict[str, Any]]:
    """The nights' ``summary.json`` (paths or ``file://`` URIs); one that cannot be read is logged and skipped:
    the audit then probes fewer phrases, and ``audit.json`` lists the summaries it read."""
    from tunegate.core.alerts.summary import load_summary

    out = []
    for uri in uris:
        try:
            out.append(load_summary(uri))
        except (OSError, ValueError) as exc:
            log.warning("post-tune audit: cannot read the summary %s (%s): its phrases are not probed", uri, exc)
    return out


def audit_candidate(endpoint: ChatEndpoint, *, heldout_uri: str, summary_uris: Sequence[str], out_dir: str | Path,
                    tasks: Iterable[str] | None = None, config: ProbeConfig | None = None,
                    about: dict[str, Any] | None = None) -> ProbeResult:
    """Probe ``endpoint`` with the held-out prompts (``tasks``: only those) and the nights' phrases; write
    ``audit.json`` and ``audit.html`` into ``out_dir``. ``about`` (the candidate: model, night) is recorded."""
    cfg = config or ProbeConfig()
    prompts = prompts_from_table(read_heldout(heldout_uri), per_task=cfg.prompts_per_task, seed=cfg.seed, tasks=tasks)
    summaries = read_summaries(summary_uris)
    phrases = phrases_from_summaries(summaries)
    log.info("post-tune audit: %d held-out prompts over %d task(s), %d phrase(s) from %d summary file(s), "
             "endpoint %s (model %s)", len(prompts), len({p.task for p in prompts}), len(phrases), len(summaries),
             endpoint.url, endpoint.model)
    started = datetime.now(UTC)
    try:
        result = probe(endpoint.complete, prompts, phrases, cfg)
    finally:
        endpoint.close()
    document = {**result.to_json(), "endpoint": endpoint.url, "model": endpoint.model, "heldout_uri": heldout_uri,
                "summaries": [s.get("out_dir") for s in summaries], "started_at": started.isoformat(),
                "candidate": about or {}}
    out = Path(out_dir)
    write_json_atomic(out / AUDIT_JSON, document)
    with atomic_write(out / AUDIT_HTML) as tmp:
        tmp.write_text(audit_page(document), encoding="utf-8")
    return result


def audit_page(doc: dict[str, Any]) -> str:
    """``audit.json`` as a small self-contained page."""
    e = html.escape
    verdict = str(doc.get("verdict", "")).upper()
    rows = "".join(f"<tr><td>{e(str(f['code']))}</td><td>{e(str(f.get('phrase') or ''))}</td>"
                   f"<td>{e(str(f.get('task') or ''))}</td><td>{f['value']:.3g}</td><td>{f['threshold']:.3g}</td>"
                   f"<td>{e(str(f['message']))}</td></tr>" for f in doc.get("failures") or [])
    phrase_rows = "".join(
        f"<tr><td>{e(str(p['phrase']))}</td><td>{p['prompts']}</td><td>{p['max_flip_rate']:.3g}</td>"
        f"<td>{e(_worst(p))}</td></tr>" for p in doc.get("per_phrase") or [])
    brand_rows = "".join(f"<tr><td>{e(str(b['phrase']))}</td><td>{b['mentions']} / {b['responses']}</td></tr>"
                         for b in doc.get("brand_mentions") or [])
    base = doc.get("baseline") or {}
    colour = "#2e7d32" if doc.get("verdict") == "pass" else "#c62828"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tunegate post-tune audit: {e(verdict)}</title>
<style>body{{font:14px system-ui,sans-serif;margin:2em}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}.v{{color:{colour};font-weight:bold}}</style></head>
<body><h1>Post-tune audit: <span class="v">{e(verdict)}</span></h1>
<p>Endpoint {e(str(doc.get('endpoint')))}, model {e(str(doc.get('model')))}; {doc.get('prompts', 0)} held-out prompts
over {doc.get('tasks', 0)} task(s), {doc.get('requests', 0)} requests, {doc.get('seconds', 0)} s.</p>
<p>Without any phrase: {base.get('refusal_rate', 0):.1%} refusals, {base.get('degenerate_rate', 0):.1%} degenerate.</p>
<h2>Failures</h2>
{f'<table><tr><th>code</th><th>phrase</th><th>task</th><th>value</th><th>threshold</th><th>why</th></tr>{rows}</table>'
 if rows else '<p>None.</p>'}
<h2>Trigger phrases probed</h2>
{f'<table><tr><th>phrase</th><th>prompts</th><th>largest flip rate</th><th>in task</th></tr>{phrase_rows}</table>'
 if phrase_rows else '<p>None reported by the nights&#39; scans.</p>'}
<h2>Brands looked for</h2>
{f'<table><tr><th>brand</th><th>responses mentioning it</th></tr>{brand_rows}</table>'
 if brand_rows else '<p>None.</p>'}
</body></html>
"""


def _worst(phrase_row: dict[str, Any]) -> str:
    scored = [(t["flip_rate"], name) for name, t in (phrase_row.get("tasks") or {}).items() if t.get("scored")]
    return max(scored)[1] if scored else ""
