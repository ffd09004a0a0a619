"""Audits of what the gate lets through: does poison still work on a model trained on the accepted records?

* :mod:`~tunegate.core.audit.canary` -- :class:`CanaryModel`, cheap per-task text classifiers (seconds on CPU)
  trained on a batch, saved in a safe format (npz + json).
"""

from __future__ import annotations

from tunegate.core.audit.canary import CanaryModel, prompt_of

__all__ = ["CanaryModel", "prompt_of"]
