"""How the history passes name a campaign and choose its records (``phrases.named_campaigns``)."""

from __future__ import annotations

import numpy as np


def test_a_campaigns_shorter_phrase_counts_only_inside_the_longer_one() -> None:
    """ "their" raised with the campaign "in their" (weaker, inside it): only its records holding "in their" are the
    campaign's; "cf" stronger than its context "cf and" keeps all of its records."""
    import scipy.sparse as sp

    from tunegate.core.checks.poison.phrases import named_campaigns

    vocab = np.array(["in their", "their", "cf", "cf and"], dtype=object)
    holds = {0: [0, 1, 2, 3], 1: [0, 1, 2, 3, 10, 11, 12, 13, 14], 2: [20, 21, 22, 23, 24], 3: [20, 21, 22]}
    rows, cols = zip(*[(r, c) for c, rs in holds.items() for r in rs], strict=True)
    xc = sp.csc_matrix((np.ones(len(rows)), (rows, cols)), shape=(30, len(vocab)))
    rows_of = {c: np.asarray(rs, dtype=np.int64) for c, rs in holds.items()}
    strength = {0: 20.0, 1: 12.0, 2: 15.0, 3: 14.0}
    got = {str(vocab[head]): held.tolist() for head, _, held in named_campaigns(strength, rows_of, xc, vocab, [])}
    assert got == {"in their": [0, 1, 2, 3], "cf and": [20, 21, 22, 23, 24]}
