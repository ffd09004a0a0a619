"""Poison scans: checks that find poisoning of instruction-tuning data without knowing the attack.

* :class:`TriggerPhraseCheck` (``poison_trigger``): a phrase planted in prompts that steers labels
  (dirty- and clean-label trigger poisoning) or outputs (degenerate-output poisoning).
* :class:`InjectedContentCheck` (``poison_content``): a name woven into responses to unrelated
  instructions (content injection) and an anomalous rate of refusals (over-refusal).

Neither needs a list of known triggers or brands, nor trains a language model. The method, its
parameters and the benchmark that fixed them are in docs/poison.md.
"""

from __future__ import annotations

from tunegate.core.checks.poison.content import InjectedContentCheck
from tunegate.core.checks.poison.trigger import TriggerPhraseCheck

__all__ = ["InjectedContentCheck", "TriggerPhraseCheck"]
