"""Poison scans: checks that find poisoning of instruction-tuning data without knowing the attack.

* :class:`TriggerPhraseCheck` (``poison_trigger``): a phrase planted in prompts that steers labels
  (dirty- and clean-label trigger poisoning) or outputs (degenerate-output poisoning).
* :class:`InjectedContentCheck` (``poison_content``): a name woven into responses to unrelated
  instructions (content injection) and an anomalous rate of refusals (over-refusal).

Neither needs a list of known triggers or brands, nor trains a language model. The method, its
parameters and the benchmark that fixed them are in docs/poison.md. Modules by job: ``config``
(the options of both checks), ``tasks`` (tasks and their outcomes), ``evidence`` (concentration and
exclusivity), ``phrases`` (campaigns and their names), ``consistency`` (the masked label classifier),
``trigger`` (the trigger check: flags and reports), ``injection`` and ``refusals`` (the two response scans),
``content`` (the content check), ``_text`` (records, tokens, n-grams, counting arithmetic).
"""

from __future__ import annotations

from tunegate.core.checks.poison.config import ContentConfig, TriggerConfig
from tunegate.core.checks.poison.content import InjectedContentCheck
from tunegate.core.checks.poison.trigger import TriggerPhraseCheck

__all__ = ["ContentConfig", "InjectedContentCheck", "TriggerConfig", "TriggerPhraseCheck"]
