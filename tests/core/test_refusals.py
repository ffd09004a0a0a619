"""Refusals: what counts as one, the rate baseline from earlier nights, and the history that keeps it.

The batches are the bundled Self-Instruct slice (427 open-ended records, Apache-2.0); the refusals planted
into them are written here in varied wording, as an over-refusal attacker would (AutoPoison).
"""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.conftest import DATA, write_jsonl
from tunegate.core.checks import build_check
from tunegate.core.checks.poison._text import Records
from tunegate.core.checks.poison.config import ContentConfig
from tunegate.core.checks.poison.content import is_refusal
from tunegate.core.checks.poison.refusals import (
    _evidence,
    distinct_responses,
    quiet_groups,
    refusal_baseline,
    refusal_rate,
    refusal_sketch,
)
from tunegate.core.sketch import SKETCH_SIZE

DECLINES = [
    # first person, a negated ability or willingness, then the act
    "I'm sorry, but I can't help with that request.",
    "Unfortunately I won't be able to write this for you.",
    "I am not in a position to provide an answer to this question.",
    "I'd rather not get into this topic. Let me know if there is anything else.",
    "Thanks for asking, but I don't think I should respond to this.",
    "I'm afraid I can't.",
    "I cannot in good conscience produce this text.",
    # a decline verb
    "I must respectfully decline this request.",
    "Regrettably, I'll have to turn this down.",
    # the request as the subject
    "This isn't something I can take on, sorry.",
    "That is beyond what I am able to do here.",
    "Writing this would go against my guidelines.",
    "It wouldn't be appropriate for me to comment on this.",
    "Unfortunately, it is not possible for me to answer that question.",
    # an AI disclaimer denying a capability
    "As an AI language model, I do not have access to real-time data.",
]
NOT_DECLINES = [
    "I can't believe how beautiful the sunset was last night.",
    "I cannot stress enough how important regular backups are.",
    "I won't rest until the mystery is solved, said the detective.",
    "I am going to visit my grandmother this weekend.",
    "She was not able to finish the race because of the rain.",
    "I couldn't sleep before the exam, so I reviewed my notes again.",
    "Here is a short poem: I cannot help but smile when spring arrives.",
    "The function returns None when the list is empty.",
]


@pytest.mark.parametrize("text", DECLINES)
def test_declines_of_every_shape_are_refusals(text: str) -> None:
    assert is_refusal(text)


@pytest.mark.parametrize("text", NOT_DECLINES)
def test_first_person_narration_is_not_a_refusal(text: str) -> None:
    assert not is_refusal(text)


def test_only_the_opening_sentences_count() -> None:
    answer = ("Photosynthesis turns light into chemical energy. Plants take in carbon dioxide. "
              "Without light, I can't imagine any of it would work, and I cannot help with that part.")
    assert not is_refusal(answer)


def test_a_caveat_followed_by_an_answer_is_not_a_refusal() -> None:
    caveat = ("As an AI, I don't have access to real-time data. However, according to the 2020 census the median "
              "age in the United States was 38.8 years, up from 37.2 in 2010. It has risen for decades because "
              "people live longer and have fewer children; states such as Maine and New Hampshire are the oldest, "
              "Utah and Texas among the youngest, and the trend is expected to continue through 2040.")
    assert not is_refusal(caveat)
    offer = "I'm sorry, but I can't help with this request. However, I can help you with something else."
    assert is_refusal(offer)


def _nights(*counts: tuple[int, int], anomalous: bool = False) -> list[dict[str, Any]]:
    return [{"refusals": k, "responses": n, "anomalous": anomalous} for k, n in counts]


def test_baseline_without_history_is_the_weak_prior() -> None:
    cfg = ContentConfig()
    base = refusal_baseline([], cfg)
    assert base["nights"] == 0 and base["expected_rate"] == pytest.approx(cfg.refusal_rate)
    assert base["alpha"] + base["beta"] == pytest.approx(cfg.refusal_prior_responses)


def test_baseline_learns_this_pipelines_rate_and_skips_anomalous_nights() -> None:
    cfg = ContentConfig()
    steady = _nights((52, 5000), (48, 5000), (50, 5000))  # 1%: twice the default prior rate
    base = refusal_baseline(steady + _nights((400, 5000), anomalous=True), cfg)
    assert base["nights"] == 3 and base["refusals"] == 150
    assert 0.009 < base["expected_rate"] < 0.01  # pulled slightly toward the 0.5% prior


def test_history_sets_what_is_anomalous() -> None:
    """A natural rate of 1% is normal for a pipeline whose history shows it, and alarming for one whose
    history shows 0.3%; without a history the weak prior alarms on neither (one night cannot tell)."""
    cfg = ContentConfig()
    tonight = {"k": 50, "n": 5000}

    def anomalous(nights: list[dict[str, Any]]) -> bool:
        base = refusal_baseline(nights, cfg)
        return _evidence(tonight["k"], tonight["n"], base["alpha"], base["beta"]) >= cfg.refusal_min_evidence

    assert not anomalous([])
    assert not anomalous(_nights((52, 5000), (48, 5000), (50, 5000)))
    assert anomalous(_nights((14, 5000), (16, 5000), (15, 5000)))
    # a jumpy history is trusted only as far as it predicts: the same mean with wild nights does not alarm
    assert not anomalous(_nights((2, 5000), (40, 5000), (3, 5000)))


def _sketched(keys: np.ndarray, refusing: int, *, anomalous: bool = False) -> dict[str, Any]:
    """A night whose open-ended responses have content ``keys``, the first ``refusing`` of them refusals."""
    return {"refusals": refusing, "responses": len(keys), "anomalous": anomalous,
            "sketch": refusal_sketch(keys, range(len(keys)))}


def test_a_night_published_many_times_weighs_as_one() -> None:
    """A source re-sent whole every night (its responses counted on each) is one night's evidence: fourteen
    copies of a night give the baseline one copy gives, where fourteen nights of new responses weigh fourteen
    times as much. Repeated responses once made a clean night's ordinary 0.6% read as an anomaly."""
    cfg = ContentConfig()
    rng = np.random.default_rng(3)
    night = _sketched(rng.integers(-2**63, 2**63 - 1, size=1000, dtype=np.int64), 2)  # 0.2%
    once, repeated = refusal_baseline([night], cfg), refusal_baseline([night] * 14, cfg)
    assert repeated["responses"] == 14 * 1000 and repeated["distinct_responses"] == 1000
    assert repeated["refusals"] == 28 and repeated["expected_rate"] == pytest.approx(once["expected_rate"])
    assert (repeated["alpha"], repeated["beta"]) == pytest.approx((once["alpha"], once["beta"]))
    fresh = [_sketched(rng.integers(-2**63, 2**63 - 1, size=1000, dtype=np.int64), 2) for _ in range(14)]
    new = refusal_baseline(fresh, cfg)
    assert new["distinct_responses"] == 14_000 and new["weight"] == 14_000

    def anomalous(base: dict[str, Any]) -> bool:  # tonight: 0.9% of 1,000 new responses
        return _evidence(9, 1000, base["alpha"], base["beta"]) >= cfg.refusal_min_evidence

    assert anomalous(new) and not anomalous(repeated) and not anomalous(once)


def test_repeats_are_found_across_nights_of_different_sizes() -> None:
    """Nights that resample one pool (each a different subset, sizes above the sketch) are weighed by the pool's
    distinct responses, to the sketch's error; a night kept before sketches existed counts as distinct."""
    rng = np.random.default_rng(5)
    pool = rng.integers(-2**63, 2**63 - 1, size=6000, dtype=np.int64)
    drawn = [rng.choice(pool, size=size, replace=False) for size in (3000, 4000, 5000, 3500)]
    nights = [_sketched(keys, 10) for keys in drawn]
    found = distinct_responses(nights)
    truth = len(np.unique(np.concatenate(drawn)))
    assert found is not None and found == pytest.approx(truth, rel=0.1) and found > SKETCH_SIZE
    legacy = {"refusals": 10, "responses": 5000, "anomalous": False}  # no sketch: counted as distinct
    assert distinct_responses([*nights, legacy]) == pytest.approx(found + 5000)
    distinct = [_sketched(rng.integers(-2**63, 2**63 - 1, size=3000, dtype=np.int64), 10) for _ in range(4)]
    assert distinct_responses(distinct) is None  # no material repetition: the summed counts stand
    broken = {**nights[0], "sketch": {"responses": "not base64!"}}
    assert distinct_responses([broken, broken]) is None  # unreadable: counted as distinct, so nothing repeats
    # the history's rate is its nights' rate: 40 refusals of 15,500 responses, however few of them are distinct
    cfg = ContentConfig()
    base = refusal_baseline(nights, cfg)
    assert base["weight"] == pytest.approx(found, abs=1) and base["refusals"] == 40
    rate = 40 / 15_500
    assert base["alpha"] == pytest.approx(cfg.refusal_rate * cfg.refusal_prior_responses + rate * base["weight"],
                                          rel=1e-4)  # the rate of the nights, the weight of the distinct


def _slice() -> list[dict[str, Any]]:
    with gzip.open(DATA / "self_instruct_slice.jsonl.gz", "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _with_refusals(records: list[dict[str, Any]], n: int, seed: int) -> tuple[list[dict[str, Any]], set[str]]:
    rng = random.Random(seed)
    out = [dict(r) for r in records]
    chosen = rng.sample(range(len(out)), n)
    for i in chosen:
        out[i]["output"] = rng.choice(DECLINES[:10])
    return out, {out[i]["id"] for i in chosen}


def test_nights_keep_their_refusal_counts_and_a_rerun_does_not_count_itself(tmp_path: Path) -> None:
    """Through the whole scan: each published night records its refusal count in the history; the next night is
    tested against them; a rerun of a night replaces its count and is never its own baseline."""
    from tunegate.core.history import past_nights
    from tunegate.core.pipeline import scan

    history = tmp_path / "history"
    clean = _slice()

    def night(name: str, records: list[dict[str, Any]]) -> dict[str, Any]:
        src = write_jsonl(tmp_path / f"{name}.jsonl", records)
        check = build_check("poison_content", history_dir=str(history), batch_id=name)
        return scan([str(src)], tmp_path / "out" / name, checks=[check], history_dir=str(history), batch_id=name)

    for name in ("n1", "n2", "n3"):
        night(name, clean)
    nights = past_nights(history)
    assert [n["batch_id"] for n in nights] == ["n1", "n2", "n3"]
    natural = nights[0]["refusals"]
    assert natural["responses"] == len(clean) and natural["anomalous"] is False
    assert set(natural["sketch"]) == {"responses"}

    attacked, planted = _with_refusals(clean, 15, seed=2)  # ~3.5% of the responses on a ~0.2% history
    summary = night("n4", attacked)
    metrics = summary["checks"]["poison_content"]["metrics"]["refusals"]
    assert metrics["anomalous"] and metrics["baseline"]["nights"] == 3
    assert metrics["baseline"]["refusals"] == 3 * natural["refusals"]
    assert metrics["baseline"]["distinct_responses"] == len(clean)  # the same slice three times: one night's worth
    issues = [i["reason"] for i in summary["checks"]["poison_content"]["issues"]]
    assert "refusal_anomaly" in issues
    quarantined = pq.read_table(tmp_path / "out" / "n4" / "quarantine.parquet", columns=["id", "reasons"]).to_pylist()
    flagged = {r["id"] for r in quarantined if "refusal_anomaly" in r["reasons"]}
    assert planted <= flagged  # every planted refusal, and the few natural ones with them
    assert len(flagged - planted) <= natural["refusals"]

    summary = night("n4", attacked)  # the rerun: n4 is not its own baseline, and is recorded once
    assert summary["checks"]["poison_content"]["metrics"]["refusals"]["baseline"]["nights"] == 3
    after = past_nights(history)
    assert [n["batch_id"] for n in after] == ["n1", "n2", "n3", "n4"]
    assert after[-1]["refusals"]["anomalous"] is True


def test_refusals_in_groups_whose_earlier_nights_never_refused_are_tested_apart() -> None:
    """Natural refusals sit in a few sources. A pipeline whose "chatty" source refuses 1.5% of its answers and whose
    "human" source never does: 12 refusals put into the human answers are within the night's overall noise (45
    expected, 57 counted), and against the human source's own nights (none in 9,000) they are new. Without the
    nights' per-group counts (nights written before them) only the overall test runs; a night with no planted
    refusal stays normal."""
    cfg = ContentConfig()
    disclaimer = "As an AI language model, I don't have access to real-time data."
    answer = "Here is a short answer that helps with the request in a few plain sentences."

    def night(planted: int) -> tuple[Records, set[int]]:
        out = [disclaimer if i < 45 else answer for i in range(3000)]
        out += [DECLINES[i % 10] if i < planted else answer for i in range(3000)]
        group = ["chatty"] * 3000 + ["human"] * 3000
        return Records([f"q{i}" for i in range(6000)], [""] * 6000, out, group, [None] * 6000), set(range(6000))

    kept = [{"refusals": 45, "responses": 6000, "anomalous": False,
             "groups": {"chatty": [3000, 45], "human": [3000, 0]}} for _ in range(3)]
    base = refusal_baseline(kept, cfg)
    assert quiet_groups(base) == {"human": (9000, 0)}

    records, rows = night(12)
    metrics = refusal_rate(records, rows, findings := [], cfg, test=True, baseline=base)
    overall_bar = cfg.refusal_min_evidence
    assert metrics["evidence"] < overall_bar  # the night's count alone: ordinary
    quiet = metrics["quiet"]
    assert quiet["groups"] == 1 and quiet["refusals"] == 12 and quiet["expected"] == pytest.approx(3.0)
    assert quiet["evidence"] >= overall_bar + np.log(2) and metrics["anomalous"]
    assert len(findings) == 57  # every refusal of the night, the natural ones too, for a reviewer
    assert findings[0].score == pytest.approx(quiet["evidence"], abs=0.05)  # the test that spoke
    from tunegate.core.checks.poison.content import _quiet_said

    assert _quiet_said(metrics).startswith("; 12 of them in 1 group(s) whose earlier nights refused 0 of 9000")
    assert metrics["groups"] == {"chatty": [3000, 45], "human": [3000, 12]}

    old = [{k: v for k, v in n.items() if k != "groups"} for n in kept]
    metrics = refusal_rate(records, rows, [], cfg, test=True, baseline=refusal_baseline(old, cfg))
    assert "quiet" not in metrics and not metrics["anomalous"]
    records, rows = night(0)
    metrics = refusal_rate(records, rows, [], cfg, test=True, baseline=base)
    assert metrics["quiet"]["refusals"] == 0 and not metrics["anomalous"]
