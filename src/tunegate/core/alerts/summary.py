"""Reading a gate summary (``summary.json``, see :mod:`tunegate.core.gate`) for an alert.

The counts, the quarantine reasons by count, the suspicious phrases any check reported (in any of the
accepted shapes), the report link, and :func:`load_summary` for a path or ``file://`` URI.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote, unquote, urlparse

from tunegate.core.alerts.text import clean

COUNT_KEYS = ("total", "accepted", "quarantined", "rejected")
#: Keys under which a check may name a phrase or its count in ``metrics.suspicious_phrases`` items.
_PHRASE_KEYS = ("phrase", "text", "ngram", "trigger", "value")
_COUNT_KEYS = ("count", "records", "support", "n")


def top_reasons(summary: Mapping[str, Any]) -> list[tuple[str, int]]:
    """Quarantine reasons by record count, most frequent first (ties by name)."""
    reasons = summary.get("reasons") or {}
    return sorted(((clean(str(k)), int(v)) for k, v in reasons.items()), key=lambda kv: (-kv[1], kv[0]))


def suspicious_phrases(summary: Mapping[str, Any]) -> list[tuple[str, int | None]]:
    """Phrases that checks flagged as suspicious, across checks, most frequent first, without repeats.

    A check reports them under ``checks.<name>.metrics.suspicious_phrases`` as a list of strings, a list
    of objects (``{"phrase": ..., "count": ...}``; ``text``/``ngram``/``trigger`` and ``records``/``support``
    are accepted too), or a mapping phrase -> count.
    """
    found: dict[str, int | None] = {}
    for check in (summary.get("checks") or {}).values():
        metrics = check.get("metrics") if isinstance(check, Mapping) else None
        raw = metrics.get("suspicious_phrases") if isinstance(metrics, Mapping) else None
        for phrase, count in _phrase_items(raw):
            phrase = clean(phrase)
            if not phrase:
                continue
            old = found.get(phrase)
            found[phrase] = count if old is None else max(old, count or 0)
    return sorted(found.items(), key=lambda kv: (-(kv[1] if kv[1] is not None else -1), kv[0]))


def _phrase_items(raw: Any) -> Iterable[tuple[str, int | None]]:
    if isinstance(raw, Mapping):
        for k, v in raw.items():
            yield str(k), _as_int(v)
    elif isinstance(raw, list | tuple):
        for item in raw:
            if isinstance(item, str):
                yield item, None
            elif isinstance(item, Mapping):
                phrase = next((item[k] for k in _PHRASE_KEYS if item.get(k)), None)
                if phrase is not None:
                    yield str(phrase), next((_as_int(item[k]) for k in _COUNT_KEYS if k in item), None)
            elif isinstance(item, list | tuple) and item:
                yield str(item[0]), _as_int(item[1]) if len(item) > 1 else None


def _as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def report_url(summary: Mapping[str, Any], *, base_url: str | None = None,
               data_root: str | Path | None = None) -> str | None:
    """The link to the batch's HTML report.

    With ``base_url`` and a report under ``data_root``: ``base_url`` + the report's path relative to
    ``data_root`` (URL-quoted). Otherwise the report's ``file://`` URI.
    """
    out_dir = summary.get("out_dir")
    if not out_dir:
        return None
    name = str((summary.get("outputs") or {}).get("report", "report.html"))
    path = Path(out_dir) / name
    if base_url and data_root:
        try:
            rel = path.resolve().relative_to(Path(data_root).resolve())
        except ValueError:
            rel = None
        if rel is not None:
            return base_url.rstrip("/") + "/" + quote(PurePosixPath(*rel.parts).as_posix())
    return path.resolve().as_uri() if path.is_absolute() else path.as_posix()


def load_summary(location: str | Path) -> dict[str, Any]:
    """Read a ``summary.json`` given as a path or a ``file://`` URI."""
    text = str(location)
    if text.startswith("file:"):
        text = unquote(urlparse(text).path)
    data = json.loads(Path(text).read_text(encoding="utf-8"))
    if not isinstance(data, dict) or "verdict" not in data:
        raise ValueError(f"{location}: not a tunegate summary (no 'verdict' key)")
    return data


def contributor_lines(summary: Mapping[str, Any]) -> list[str]:
    """The contributor ledger's news for an alert (``summary["ledger"]``, the ``contributor_policy`` metrics):
    campaigns attributed to a contributor, new contributors flooding the night, then the trust movers."""
    ledger = summary.get("ledger") or {}
    metrics = ((summary.get("checks") or {}).get("contributor_policy") or {}).get("metrics") or {}
    lines = [f"campaign {clean(str(a['campaign']))!r} attributed to contributor {clean(str(a['contributor']))!r}: "
             f"{a['from_contributor']} of its {a['campaign_records']} records (p={a['p_value']:.2g}); their other "
             "records are held" for a in metrics.get("campaigns") or []]
    over = metrics.get("new_over_cap") or {}
    lines += [f"new contributor {clean(str(name))!r} floods the night: {n} records over the first-night cap held"
              for name, n in over.items()]
    for r in ledger.get("movers") or []:
        before, after = r["trust_before"], r["trust"]
        lines.append(f"trust of {clean(str(r['name']))!r} {before['score']:.3f} -> {after['score']:.3f} "
                     f"[{after['low']:.3f}, {after['high']:.3f}] ({r['flagged']} of {r['records']} flagged tonight)")
    return lines
