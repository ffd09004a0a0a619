"""report.html: the page an on-call engineer opens at night, self-contained (inline CSS and SVG, no JavaScript,
nothing fetched) and deterministic for a batch.

Top to bottom: the verdict and counts; what to do next (by verdict and the issues that matter); the issues,
most urgent first; the suspicious phrases the poison scans found, with their records, phrase marked; the canary
audit (how far each probed phrase moves a model trained on the accepted records); records
per reason and the strongest examples of each; near-duplicate clusters; score distributions with their
thresholds; the breakdown per task and contributor; the trend over recent nights; the contributor ledger and
source diversity; checks, rejected input, inputs and the whole policy.

Modules: :mod:`.page` (assembles the sections), :mod:`.reading` (the outputs, in bounded memory),
:mod:`.issues` (ranking, next steps), :mod:`.phrases` (the phrase table), :mod:`.canary` (the canary audit),
:mod:`.evidence` (readable evidence, the marked phrase), :mod:`.plots` (altair charts as inline SVG),
:mod:`.trend` (recent nights), :mod:`.contributors` (the ledger and diversity section). The template is
``templates/report.html.j2``, autoescaped: record text, reasons and messages are escaped there.
"""

from __future__ import annotations

from tunegate.core.report.page import render_report

__all__ = ["render_report"]
