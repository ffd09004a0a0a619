"""Verification's sequence matcher: the compiled one gives difflib's opcodes and ratios exactly."""

from __future__ import annotations

import difflib
import random

import pytest

from tunegate.core.checks._edits import _matcher


def test_compiled_matcher_equals_difflib() -> None:
    pytest.importorskip("cydifflib")
    assert _matcher() is not difflib.SequenceMatcher
    rng = random.Random(7)
    vocab = [f"w{i}" for i in range(60)] + ["the", "of", "a", "and", "to"] * 12
    for _ in range(2_000):
        a = tuple(rng.choice(vocab) for _ in range(rng.randint(0, 90)))
        b = list(a)
        for _ in range(rng.randint(0, 12)):  # edits, moved runs, new runs
            op = rng.random()
            at = rng.randint(0, len(b))
            if op < 0.3 and b:
                del b[min(at, len(b) - 1)]
            elif op < 0.6:
                b.insert(at, rng.choice(vocab))
            elif op < 0.8 and len(b) > 6:
                run = b[at:at + 5]
                del b[at:at + 5]
                b[rng.randint(0, len(b)):0] = run
            else:
                b[at:at] = [rng.choice(vocab) for _ in range(rng.randint(1, 20))]
        ours = _matcher()(None, a, tuple(b), autojunk=False)
        ref = difflib.SequenceMatcher(None, a, tuple(b), autojunk=False)
        assert [tuple(op) for op in ours.get_opcodes()] == ref.get_opcodes()
        x, y = " ".join(a[:2]), " ".join(b[:2])
        assert _matcher()(None, x, y, autojunk=False).ratio() == difflib.SequenceMatcher(None, x, y,
                                                                                         autojunk=False).ratio()
