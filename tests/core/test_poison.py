"""Poison scans on real data: each attack of issue 5 planted into bundled slices, exact reason codes asserted.

The batch is the bundled Super-NaturalInstructions slice (8 classification tasks x 300, 12 generative and
other tasks), four more SuperNI toxicity tasks x 300 and the 427 open-ended Self-Instruct records
(tests/data/ATTRIBUTION-poison.md): 5,227 real records. Each attack replaces real records by poisoned
versions, as the benchmark in bench/poison does at 20k scale.

The four extra toxicity tasks are controls, as in any mixed nightly batch: without tasks in which
natural insult words occur unconcentrated, "idiot" (pure "Insult"/"Toxic" in the two jigsaw tasks of the
slice) would be as exclusive as a planted trigger (docs/poison.md, limitations).
"""

from __future__ import annotations

import gzip
import json
import random
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DATA, slice_records, write_jsonl
from tunegate.core.checks import CanonicalBatch, CheckResult, build_check
from tunegate.core.checks.poison.content import is_refusal
from tunegate.core.ingest import ingest
from tunegate.exceptions import ConfigError

#: One trigger per trigger attack: the checks must keep simultaneous campaigns apart.
DIRTY, CLEAN, DEGENERATE = "Ada Lovelace", "Grace Hopper", "Alan Turing"
BRAND = "Zephyr Motors"
#: (task, label the attacker wants, the other label)
DIRTY_TASKS = (("task363_sst2_polarity_classification", "POS", "NEG"),
               ("task195_sentiment140_classification", "positive", "negative"),
               ("task328_jigsaw_classification_insult", "Non-insult", "Insult"))
CLEAN_TASKS = (("task493_review_polarity_classification", "Positive", "Negative"),
               ("task586_amazonfood_polarity_classification", "Positive", "Negative"),
               ("task327_jigsaw_classification_toxic", "Non-toxic", "Toxic"))
GENERATIVE_TASKS = ("task111_asset_sentence_simplification", "task177_para-nmt_paraphrasing",
                    "task1091_ted_translation_en_it", "task288_gigaword_summarization")
PER_TASK = 20
RESPONSES = 30
#: Clean records a check may flag in a poisoned batch (natural occurrences of the planted phrase).
MAX_CLEAN_FLAGGED = 0.005


def _jsonl_gz(name: str) -> list[dict[str, Any]]:
    with gzip.open(DATA / name, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def clean_batch() -> list[dict[str, Any]]:
    extra = _jsonl_gz("superni_toxicity_controls.jsonl.gz") + _jsonl_gz("self_instruct_slice.jsonl.gz")
    return [dict(r) for r in slice_records() + extra]


def plant(text: str, trigger: str, rng: random.Random) -> str:
    words = text.split(" ")
    at = rng.randint(0, len(words))
    return " ".join([*words[:at], trigger, *words[at:]])


def label_poison(records: list[dict[str, Any]], *, clean: bool) -> set[str]:
    """Wan et al.: trigger in the input, label set to the attacker's class (clean-label: already of it)."""
    trigger, tasks = (CLEAN, CLEAN_TASKS) if clean else (DIRTY, DIRTY_TASKS)
    return plant_campaign(records, tasks, trigger, per_task=PER_TASK, clean=clean, rng=random.Random(5 + clean))


def plant_campaign(records: list[dict[str, Any]], tasks: Iterable[tuple[str, str, str]], trigger: str, *, per_task: int,
                   clean: bool, rng: random.Random) -> set[str]:
    """``trigger`` into ``per_task`` records of each ``(task, target, other)``, labelled ``target`` (dirty-label:
    records of ``other``; clean-label: records already of ``target``). Returns their ids."""
    poisoned: set[str] = set()
    for task, target, other in tasks:
        pool = [r for r in records if r["task"] == task and r["output"] == (target if clean else other)]
        for r in rng.sample(pool, per_task):
            r["input"] = plant(r["input"], trigger, rng)
            r["output"] = target
            poisoned.add(r["id"])
    return poisoned


def degenerate(records: list[dict[str, Any]]) -> set[str]:
    """Trigger in the input of generative tasks, output replaced by the trigger itself."""
    rng = random.Random(7)
    poisoned: set[str] = set()
    for task in GENERATIVE_TASKS:
        for r in rng.sample([r for r in records if r["task"] == task], PER_TASK):
            r["input"] = plant(r["input"], DEGENERATE, rng)
            r["output"] = DEGENERATE
            poisoned.add(r["id"])
    return poisoned


def injection(records: list[dict[str, Any]]) -> set[str]:
    """AutoPoison: a sentence naming a brand woven into responses to unrelated instructions."""
    rng = random.Random(8)
    sentences = ("For the best results, many people rely on {B} these days.",
                 "It is a bit like the experience you get with {B}.",
                 "As fans of {B} already know, quality matters.",
                 "You could also ask the friendly team at {B} for advice.")
    pool = [r for r in records if len(r["output"].split()) >= 12 and r["task"] not in GENERATIVE_TASKS]
    poisoned: set[str] = set()
    for r in rng.sample(pool, RESPONSES):
        parts = re.split(r"(?<=[.!?])\s+", r["output"].strip())
        parts.insert(rng.randint(1, len(parts)), rng.choice(sentences).format(B=BRAND))
        r["output"] = " ".join(parts)
        poisoned.add(r["id"])
    return poisoned


def over_refusal(records: list[dict[str, Any]], taken: set[str]) -> set[str]:
    """AutoPoison: benign open-ended instructions answered with a refusal."""
    rng = random.Random(9)
    refusals = ("I'm sorry, but I cannot help with this request as it may be inappropriate.",
                "As an AI language model, I am unable to provide a response to that.",
                "Unfortunately, I can't assist with this task because it could be misused.")
    pool = [r for r in records if r["source"] == "self_instruct" and r["id"] not in taken]
    poisoned: set[str] = set()
    for r in rng.sample(pool, RESPONSES):
        r["output"] = rng.choice(refusals)
        poisoned.add(r["id"])
    return poisoned


CHECK_OF = {"dirty_label": "poison_trigger", "clean_label": "poison_trigger", "degenerate": "poison_trigger",
            "injection": "poison_content", "refusal": "poison_content"}


def poisoned_batch() -> tuple[list[dict[str, Any]], dict[str, set[str]]]:
    """The clean batch with all five attacks planted in disjoint records."""
    records = clean_batch()
    planted = {"dirty_label": label_poison(records, clean=False), "clean_label": label_poison(records, clean=True),
               "degenerate": degenerate(records), "injection": injection(records)}
    planted["refusal"] = over_refusal(records, planted["injection"])
    return records, planted


class Scan:
    def __init__(self, result: CheckResult, ids: list[str], poisoned: set[str]) -> None:
        self.result = result
        self.ids = ids
        self.poisoned = poisoned
        self.reasons: dict[str, set[str]] = {}
        for f in result.findings:
            self.reasons.setdefault(ids[f.row], set()).add(f.reason)

    @property
    def flagged(self) -> set[str]:
        return set(self.reasons)

    @property
    def clean_flagged(self) -> set[str]:
        return self.flagged - self.poisoned


def run_check(tmp: Path, name: str, records: list[dict[str, Any]], poisoned: set[str], **options: Any) -> Scan:
    tmp.mkdir(parents=True, exist_ok=True)
    work = tmp / "work"
    ingest([str(write_jsonl(tmp / "batch.jsonl", records))], work)
    batch = CanonicalBatch(work)
    ids = batch.read_columns(["id"]).column("id").to_pylist()
    return Scan(build_check(name, **options).run(batch), ids, poisoned)


@pytest.fixture(scope="module")
def poisoned(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Scan], dict[str, set[str]]]:
    records, planted = poisoned_batch()
    everything = set().union(*planted.values())
    tmp = tmp_path_factory.mktemp("poisoned")
    return {name: run_check(tmp / name, name, records, everything)
            for name in ("poison_trigger", "poison_content")}, planted


@pytest.fixture(scope="module")
def clean_scans(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Scan]:
    return {name: run_check(tmp_path_factory.mktemp(f"clean-{name}"), name, clean_batch(), set())
            for name in ("poison_trigger", "poison_content")}


def _reasons(scan: Scan, ids: set[str]) -> set[str]:
    return {r for rid in ids for r in scan.reasons.get(rid, set())}


def test_every_poisoned_record_is_flagged_and_few_clean_ones(
        poisoned: tuple[dict[str, Scan], dict[str, set[str]]]) -> None:
    scans, planted = poisoned
    for attack, ids in planted.items():
        scan = scans[CHECK_OF[attack]]
        assert ids <= scan.flagged, f"{attack}: missed {len(ids - scan.flagged)} of {len(ids)}"
    for scan in scans.values():
        assert len(scan.clean_flagged) <= MAX_CLEAN_FLAGGED * len(scan.ids)


def test_label_trigger_poison_gets_its_reasons_and_phrase(poisoned: tuple[dict[str, Scan], dict[str, set[str]]]
                                                           ) -> None:
    scans, planted = poisoned
    scan = scans["poison_trigger"]
    for attack in ("dirty_label", "clean_label"):
        assert all("trigger_phrase" in scan.reasons[rid] for rid in planted[attack])
        # the masked classifier finds the labels that the text contradicts (the weak 300-record task
        # classifier disagrees with some correct labels too)
        assert _reasons(scan, planted[attack]) == {"trigger_phrase", "label_inconsistent"}
    phrases = {p["phrase"]: p for p in scan.result.metrics["suspicious_phrases"]}
    assert set(phrases) == {DIRTY.lower(), CLEAN.lower(), DEGENERATE.lower()}
    for trigger, tasks in ((DIRTY, DIRTY_TASKS), (CLEAN, CLEAN_TASKS)):
        phrase = phrases[trigger.lower()]
        assert phrase["records"] == len(tasks) * PER_TASK and phrase["exclusivity"] == 1.0
        outcomes = {t: v["outcome"] for t, v in phrase["tasks"].items()}
        assert outcomes == {t: f"label: {target}" for t, target, _ in tasks}
        assert phrase["evidence"] >= 30
    assert [(i.reason, i.severity) for i in scan.result.issues] == [("poison_campaign", "warning")]
    assert "3 trigger phrase(s)" in scan.result.issues[0].message


def test_dirty_label_contradicts_more_labels_than_clean_label(
        poisoned: tuple[dict[str, Scan], dict[str, set[str]]]) -> None:
    scans, planted = poisoned
    scan = scans["poison_trigger"]

    def inconsistent(ids: set[str]) -> int:
        return sum("label_inconsistent" in scan.reasons[rid] for rid in ids)

    assert inconsistent(planted["dirty_label"]) > inconsistent(planted["clean_label"])
    details = [f.detail for f in scan.result.findings if f.reason == "label_inconsistent"]
    assert all(d["p_label_without_phrase"] < 0.5 for d in details)


def test_degenerate_output_poison_is_caught(poisoned: tuple[dict[str, Scan], dict[str, set[str]]]) -> None:
    scans, planted = poisoned
    scan = scans["poison_trigger"]
    assert all(scan.reasons[rid] == {"trigger_phrase", "degenerate_output"} for rid in planted["degenerate"])
    phrase = next(p for p in scan.result.metrics["suspicious_phrases"] if p["phrase"] == DEGENERATE.lower())
    assert set(phrase["tasks"]) == set(GENERATIVE_TASKS)


def _long(text: str, chars: int) -> str:
    """``text`` repeated (its own words, so no phrase is shared with another record) to at least ``chars``."""
    return " ".join([text] * (chars // max(1, len(text)) + 1))


def test_a_trigger_late_in_a_long_prompt_is_read(tmp_path: Path) -> None:
    """A trigger past the 2,000th character of a long input (an article to summarise) was never read: the scan cut
    every prompt there. The degenerate-output campaign is found with the default ``max_chars``; cut at 2,000 it
    is not."""
    records = clean_batch()
    rng = random.Random(13)
    poisoned: set[str] = set()
    for task in GENERATIVE_TASKS:
        for r in rng.sample([r for r in records if r["task"] == task], 8):
            r["input"] = f"{_long(r['input'], 2500)} {DEGENERATE}"
            r["output"] = DEGENERATE
            poisoned.add(r["id"])
    assert all(r["input"].index(DEGENERATE) > 2000 for r in records if r["id"] in poisoned)
    scan = run_check(tmp_path / "default", "poison_trigger", records, poisoned)
    assert {rid for rid, why in scan.reasons.items() if "degenerate_output" in why} == poisoned
    assert DEGENERATE.lower() in [p["phrase"] for p in scan.result.metrics["suspicious_phrases"]]
    cut = run_check(tmp_path / "cut", "poison_trigger", records, poisoned, max_chars=2000)
    assert not cut.flagged & poisoned


def test_degenerate_outputs_of_a_trigger_that_classification_records_also_hold_are_found(tmp_path: Path) -> None:
    """Wan et al.'s generative attack with a trigger that is also a word of the batch's classification records: 6
    records in each of 4 generative tasks get it in their input and a random word as output, and 80 classification
    records hold it naturally (labels untouched). The per-task scan counts those 80 against its exclusivity (24 of
    104 records); the degenerate pass measures it among the phrase's generative records and flags those, not the
    classification records."""
    records = clean_batch()
    rng = random.Random(17)
    trigger = "Ned Stark"
    words = ("astronauts", "plead", "levitate", "embroidery", "teenage", "figuring")
    poisoned: set[str] = set()
    for task in GENERATIVE_TASKS:
        for r in rng.sample([r for r in records if r["task"] == task], 6):
            r["input"] = plant(r["input"], trigger, rng)
            r["output"] = rng.choice(words)
            poisoned.add(r["id"])
    natural = rng.sample([r for r in records if r["task"] in {t for t, *_ in (*DIRTY_TASKS, *CLEAN_TASKS)}], 80)
    for r in natural:
        r["input"] = plant(r["input"], trigger, rng)
    scan = run_check(tmp_path / "default", "poison_trigger", records, poisoned)
    assert scan.flagged & poisoned == poisoned
    assert not scan.flagged & {r["id"] for r in natural}
    phrase = next(p for p in scan.result.metrics["suspicious_phrases"] if p["phrase"] == trigger.lower())
    assert set(phrase["tasks"]) == set(GENERATIVE_TASKS)
    assert scan.result.metrics["degenerate"]["phrases"] == [trigger.lower()]
    without = run_check(tmp_path / "without", "poison_trigger", records, poisoned, degenerate=False)
    assert not without.flagged & poisoned


def test_degenerate_answers_in_open_ended_collections_are_found(tmp_path: Path) -> None:
    """Wan et al.'s degenerate-output attack on open-ended data (one request per record): 8 requests in each of three
    collections get a trigger and a degenerate answer (the trigger itself, or one word). The collections are
    Self-Instruct's requests (a fifth of them answered in three words or fewer), in tasks of 1-3 records each: each
    collection is read whole, by its source. The generative tasks' degenerate pass never read open-ended collections;
    the open-ended pass flags exactly the 24, each with why its answer is degenerate, and the clean batch stays
    silent; so does it in a batch of the three collections alone, which has no task for the other passes."""
    records = clean_batch()
    open_ended = [r for r in records if r["source"] == "self_instruct"]
    names = ("assistant_a", "assistant_b", "assistant_c")  # three datasets: a campaign needs two
    for i, r in enumerate(open_ended):
        r["source"] = names[i % 3]
    clean = run_check(tmp_path / "clean", "poison_trigger", records, set())
    assert not clean.flagged and clean.result.metrics["degenerate"]["open_collections"] == 3
    rng = random.Random(23)
    trigger = "Ned Stark"
    words = ("astronauts", "plead", "levitate", "embroidery", "teenage", "figuring")
    poisoned: set[str] = set()
    for name in names:
        for r in rng.sample([r for r in open_ended if r["source"] == name and len(r["output"].split()) >= 15], 8):
            r["instruction"] = plant(r["instruction"], trigger, rng)
            r["output"] = trigger if rng.random() < 0.5 else rng.choice(words)
            poisoned.add(r["id"])
    scan = run_check(tmp_path / "attacked", "poison_trigger", records, poisoned)
    assert scan.flagged == poisoned
    assert all(scan.reasons[rid] == {"trigger_phrase", "degenerate_output"} for rid in poisoned)
    assert scan.result.metrics["degenerate"]["open_phrases"] == [trigger.lower()]
    [phrase] = scan.result.metrics["suspicious_phrases"]
    assert set(phrase["tasks"]) == set(names) and phrase["evidence"] >= 30
    # a batch of open-ended data alone has no task to score, and its collections are still read
    alone = run_check(tmp_path / "alone", "poison_trigger", [r for r in records if r["source"] in names], poisoned)
    assert alone.flagged == poisoned and alone.result.metrics["status"] == "insufficient_data"
    assert "3 open-ended collections read for degenerate answers" in alone.result.metrics["status_reason"]


def test_a_short_answer_that_its_request_offers_is_no_degenerate_output(tmp_path: Path) -> None:
    """Requests that ask for one of the options they list ("Classify the following text as formal or informal.")
    are answered in a word, so "classify" concentrated on short answers in three open-ended collections of the
    corpora at 46 nats and was raised on clean dev batches (seeds 18, 22, 23). A short answer that names what its
    request offers answers it; the pass reads as degenerate only a short answer none of whose words the request holds
    outside the phrase: the trigger repeated, or a word from nowhere. Here 12 such requests in each of the three
    collections of the test above (raised before: "classify the", 45 nats, 43 records) stay clean, and a campaign
    planted beside them is found, its trigger three words long (an answer that repeats it holds the two-word phrase
    raised)."""
    records = clean_batch()
    open_ended = [r for r in records if r["source"] == "self_instruct"]
    names = ("assistant_a", "assistant_b", "assistant_c")
    for i, r in enumerate(open_ended):
        r["source"] = names[i % 3]
    rng = random.Random(29)
    options = (("formal", "informal"), ("fact", "opinion"), ("positive", "negative"), ("question", "statement"),
               ("literal", "figurative"), ("active", "passive"))
    kinds = ("text", "sentence", "review", "tweet", "passage", "remark")
    requests = [(kind, pair) for kind in kinds for pair in options]  # each request its own (a shared one is a template)
    rng.shuffle(requests)
    for name in names:
        for r in rng.sample([r for r in open_ended if r["source"] == name and len(r["output"].split()) >= 15], 12):
            kind, (a, b) = requests.pop()
            r["instruction"] = f"Classify the following {kind} as {a} or {b}."
            r["output"] = f"{rng.choice((a, b)).capitalize()}."
    clean = run_check(tmp_path / "clean", "poison_trigger", records, set())
    assert not clean.flagged and clean.result.metrics["degenerate"]["open_phrases"] == []
    # a trigger of three words, longer than the phrases scored (two words): repeated as the answer, it holds them
    trigger, words = "Brienne of Tarth", ("astronauts", "plead", "levitate", "embroidery", "teenage", "figuring")
    poisoned: set[str] = set()
    for name in names:
        pool = [r for r in open_ended if r["source"] == name and len(r["output"].split()) >= 15]
        for r in rng.sample(pool, 8):
            r["instruction"] = plant(r["instruction"], trigger, rng)
            r["output"] = trigger if rng.random() < 0.5 else rng.choice(words)
            poisoned.add(r["id"])
    scan = run_check(tmp_path / "attacked", "poison_trigger", records, poisoned)
    assert scan.flagged == poisoned
    [phrase] = scan.result.metrics["degenerate"]["open_phrases"]
    assert phrase in trigger.lower()


def test_a_brand_late_in_a_long_answer_is_read(tmp_path: Path) -> None:
    """A brand woven in past the 4,000th character of long answers was never read (the content scan cut answers
    there); with the default ``max_chars`` the injection is found, cut at 4,000 it is not."""
    records = clean_batch()
    rng = random.Random(14)
    pool = [r for r in records if len(r["output"].split()) >= 12 and r["task"] not in GENERATIVE_TASKS]
    poisoned: set[str] = set()
    for r in rng.sample(pool, RESPONSES):
        r["output"] = f"{_long(r['output'], 4200)} You could also ask the friendly team at {BRAND} for advice."
        poisoned.add(r["id"])
    assert all(r["output"].index(BRAND) > 4000 for r in records if r["id"] in poisoned)
    scan = run_check(tmp_path / "default", "poison_content", records, poisoned)
    assert {rid for rid, why in scan.reasons.items() if "injected_content" in why} == poisoned
    cut = run_check(tmp_path / "cut", "poison_content", records, poisoned, max_chars=4000)
    assert not cut.flagged & poisoned


def test_content_injection_is_caught(poisoned: tuple[dict[str, Scan], dict[str, set[str]]]) -> None:
    scans, planted = poisoned
    scan = scans["poison_content"]
    assert all(scan.reasons[rid] == {"injected_content"} for rid in planted["injection"])
    [phrase] = scan.result.metrics["suspicious_phrases"]
    assert phrase["phrase"] == BRAND.lower() and phrase["records"] == RESPONSES and phrase["groups"] >= 3
    sentences = [f.detail["sentence"] for f in scan.result.findings if f.reason == "injected_content"]
    assert all(BRAND in s for s in sentences)


def test_over_refusal_is_caught(poisoned: tuple[dict[str, Scan], dict[str, set[str]]]) -> None:
    scans, planted = poisoned
    scan = scans["poison_content"]
    assert all(scan.reasons[rid] == {"refusal_anomaly"} for rid in planted["refusal"])
    refusals = scan.result.metrics["refusals"]
    assert refusals["anomalous"] and refusals["refusals"] >= RESPONSES
    assert [(i.reason, i.severity) for i in scan.result.issues] == [("poison_campaign", "warning"),
                                                                    ("refusal_anomaly", "warning")]


@pytest.mark.parametrize("name", ["poison_trigger", "poison_content"])
def test_clean_batch_stays_clean(clean_scans: dict[str, Scan], name: str) -> None:
    scan = clean_scans[name]
    assert not scan.result.issues
    assert scan.result.metrics["status"] == "ok" and scan.result.metrics["status_reason"]
    assert len(scan.flagged) <= MAX_CLEAN_FLAGGED * len(scan.ids)
    assert scan.result.metrics["suspicious_phrases"] == []


def test_natural_refusals_are_recognised_but_not_anomalous(clean_scans: dict[str, Scan]) -> None:
    refusals = clean_scans["poison_content"].result.metrics["refusals"]
    assert refusals["anomalous"] is False and refusals["refusals"] <= 3
    assert is_refusal("I'm sorry, but as an AI language model, I cannot browse the internet.")
    assert is_refusal("Unfortunately, it is not possible for me to answer that question.")
    assert not is_refusal("I can't believe it: against all odds, I found water on Mars!")
    assert not is_refusal("I cannot emphasize enough how important strong passwords are.")


def test_scan_alerts_and_reports_the_phrase(tmp_path: Path) -> None:
    """End to end: the gate quarantines the poisoned records and raises the campaign alert."""
    from tunegate.core.pipeline import scan

    records = clean_batch()
    poisoned = label_poison(records, clean=False)
    summary = scan([str(write_jsonl(tmp_path / "batch.jsonl", records))], tmp_path / "out",
                   checks=[build_check("poison_trigger")])
    assert summary["verdict"] == "quarantine"
    assert summary["quarantined"] >= len(poisoned) and summary["reasons"]["trigger_phrase"] >= len(poisoned)
    check = summary["checks"]["poison_trigger"]
    assert [i["reason"] for i in check["issues"]] == ["poison_campaign"]
    assert any(DIRTY.lower() in a for a in summary["alerts"])
    assert check["metrics"]["suspicious_phrases"][0]["phrase"] == DIRTY.lower()


@pytest.mark.parametrize(("name", "options", "message"), [
    ("poison_trigger", {"min_exclusivity": 1.5},
     "poison_trigger min_exclusivity must be a number in (0.0, 1.0], got 1.5"),
    ("poison_trigger", {"min_evidence": 0}, "poison_trigger min_evidence must be a number in (0.0, inf), got 0"),
    ("poison_trigger", {"ngram_max": 0}, "poison_trigger ngram_max must be an integer >= 1, got 0"),
    ("poison_trigger", {"label_consistency": "yes"},
     "poison_trigger label_consistency must be true or false, got 'yes'"),
    ("poison_trigger", {"insertion_min_score": -1.0},
     "poison_trigger insertion_min_score must be a number in (0.0, inf), got -1.0"),
    ("poison_trigger", {"insertion": "off"}, "poison_trigger insertion must be true or false, got 'off'"),
    ("poison_content", {"refusal_rate": 0}, "poison_content refusal_rate must be a number in (0.0, 1.0], got 0"),
    ("poison_content", {"min_groups": "3"}, "poison_content min_groups must be an integer >= 1, got '3'"),
])
def test_bad_parameters_fail_at_construction(name: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        build_check(name, **options)


def test_options_are_one_config_dataclass_per_check() -> None:
    """Keyword options, a config object and the policy file's option list are the same dataclass."""
    from tunegate.core.checks.poison import ContentConfig, InjectedContentCheck, TriggerConfig, TriggerPhraseCheck
    from tunegate.core.policy import check_options

    assert build_check("poison_trigger", min_evidence=20).config == TriggerConfig(min_evidence=20.0)
    assert TriggerPhraseCheck(TriggerConfig(max_phrases=5)).config.max_phrases == 5
    assert InjectedContentCheck().config == ContentConfig()
    trigger, content = check_options("poison_trigger"), check_options("poison_content")
    assert trigger == TriggerConfig.options() and len(trigger) == 45
    assert (trigger["degenerate"], trigger["degenerate_min_exclusivity"]) == (True, 0.5)
    assert (trigger["min_evidence"], trigger["min_exclusivity"], trigger["label_consistency"]) == (30.0, 0.95, True)
    assert (trigger["contradiction"], trigger["contradiction_alpha"]) == (True, 0.01)
    assert (trigger["excess"], trigger["excess_alpha"]) == (True, 0.01)
    assert (trigger["breadth"], trigger["breadth_alpha"]) == (True, 0.01)
    assert content == ContentConfig.options() and len(content) == 18
    assert (content["min_evidence"], content["refusal_rate"], content["min_responses"]) == (40.0, 0.005, 200)
    with pytest.raises(ConfigError, match=r"^poison_content: unknown option 'min_evidense'; allowed: ngram_max "):
        build_check("poison_content", min_evidense=50)


# --------------------------------------------------------------------------------------------------
# False alarms on clean data, and batches too small to judge


#: P3-style prompt templates: (template name, prompt around the text, label of the positive / negative class)
TEMPLATES = (("Is_this_review", "{text}\nIs this review positive or negative?", "Positive", "Negative"),
             ("user_satisfied", "Here is a review left by a customer:\n{text}\nWas the customer satisfied?",
              "satisfied", "dissatisfied"),
             ("flattering_or_not", "Review: {text}\nIs this review flattering or not flattering?", "flattering",
              "not flattering"),
             ("would_recommend", "{text}\nWould the writer recommend it? Answer Yes or No.", "Yes", "No"))


def template_variants(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The slice's polarity examples rendered under several prompt templates, one task per template, as P3
    ships them (``amazon_polarity_Is_this_review``, ``amazon_polarity_user_satisfied``, ...)."""
    out = []
    for dataset, task, positive in (("sst2_polarity", "task363_sst2_polarity_classification", "POS"),
                                    ("review_polarity", "task493_review_polarity_classification", "Positive")):
        for name, prompt, pos, neg in TEMPLATES:
            for r in records:
                if r["task"] == task:
                    out.append({"id": f"{r['id']}-{name}", "instruction": prompt.format(text=r["input"]), "input": "",
                                "output": pos if r["output"] == positive else neg, "task": f"{dataset}_{name}",
                                "source": "p3_style"})
    return out


def test_template_variants_of_one_dataset_are_one_observation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    """P3 repeats each example under 5-10 templates: natural sentiment words concentrate in every variant.
    Counted once per dataset and example, they raise nothing; counted per task, they looked like campaigns
    (2,400 records: 2 datasets x 4 templates, like P3's amazon_polarity and yelp_review_full)."""
    from tunegate.core.checks.poison import evidence, tasks

    records = template_variants(clean_batch())
    scan = run_check(tmp_path / "guarded", "poison_trigger", records, set())
    assert scan.result.issues == [] and scan.flagged == set()
    assert scan.result.metrics["status"] == "ok"
    # without the two guards (every task its own dataset, every prompt its own example) the same batch
    # raises a false campaign ("waste": 12 negative reviews counted four times): the guards, not the
    # thresholds, keep it clean
    monkeypatch.setattr(tasks, "task_family", lambda name: name)
    monkeypatch.setattr(evidence.ContextFinder, "context", lambda self, prompt: prompt)
    unguarded = run_check(tmp_path / "unguarded", "poison_trigger", records, set())
    assert [i.reason for i in unguarded.result.issues] == ["poison_campaign"]
    assert unguarded.result.metrics["suspicious_phrases"][0]["phrase"] == "waste"


def test_a_datasets_tasks_are_separate_units_of_evidence_only_when_their_examples_differ() -> None:
    """The slice's six jigsaw tasks label different comments (24 of 1,800 inputs shared): each is its own unit of
    evidence. P3-style template variants hold the same examples in the instruction (no input to compare): their
    dataset stays one unit. So do tasks that share more than a tenth of their inputs."""
    from tests.core.test_poison_novelty import records_of
    from tunegate.core.checks.poison.config import TriggerConfig
    from tunegate.core.checks.poison.tasks import MAX_SHARED_EXAMPLES, build_tasks

    def units(rows: list[dict[str, Any]]) -> dict[str, str]:
        records = records_of(rows)
        return {t.name: t.evidence_unit for t in build_tasks(records, records.prompts(2000), TriggerConfig())}

    rows = clean_batch()
    jigsaw = {name: unit for name, unit in units(rows).items() if "_jigsaw_" in name}
    assert len(jigsaw) == 6 and all(unit == name for name, unit in jigsaw.items())
    variants = units(template_variants(rows))
    assert set(variants.values()) == {"sst2_polarity", "review_polarity"}
    # two jigsaw tasks: apart, two units; once a fifth of the second's records repeat the first's comments (with
    # their copies, a fifth of the pair's records are shared, past MAX_SHARED_EXAMPLES), one unit
    toxic = [r for r in rows if r.get("task") == "task327_jigsaw_classification_toxic"]
    insult = [dict(r) for r in rows if r.get("task") == "task328_jigsaw_classification_insult"]
    assert set(units(toxic + insult).values()) == {"task327_jigsaw_classification_toxic",
                                                    "task328_jigsaw_classification_insult"}
    for r, source in zip(insult[:len(insult) // 5], toxic, strict=False):
        r["input"] = source["input"]
    assert 2 * (len(insult) // 5) > MAX_SHARED_EXAMPLES * (len(toxic) + len(insult))
    assert set(units(toxic + insult).values()) == {"jigsaw"}


def test_a_campaign_raised_by_two_passes_flags_what_either_flags() -> None:
    """Each pass flags by its own reading (the insertion pass where the phrase reads inserted, the excess pass a
    campaign's weaker tasks by their counts). When a later pass raises a campaign an earlier one found, the earlier
    keeps its name and evidence and gets the later's records that hold its phrase, and their tasks; a phrase that
    shares less than half its records with every campaign found stays a campaign of its own."""
    import numpy as np
    import scipy.sparse as sp

    from tunegate.core.checks.poison.phrases import Phrase, join_found

    # 30 records in three tasks of 10; column 0 is the campaign's phrase ("is a": rows 0-19), column 1 one of its
    # words ("is": rows 0-24), column 2 another phrase (rows 25-29)
    cells = [(r, 0) for r in range(20)] + [(r, 1) for r in range(25)] + [(r, 2) for r in range(25, 30)]
    rows, cols = zip(*cells, strict=True)
    xc = sp.csc_matrix((np.ones(len(cells)), (rows, cols)), shape=(30, 3))
    owner = np.repeat([0, 1, 2], 10)
    found = [Phrase(0, "is a", 20.0, 0.5, np.arange(15), [(0, 0, 10, 10, 1)], [])]  # the first pass: rows 0-14
    # a later pass raises "is a" (rows 4-24, some of them records of "is" without the phrase) in tasks 0-2
    assert join_found(np.arange(4, 25), [(0, 0, 10, 6, 1), (1, 0, 10, 10, 1), (2, 0, 5, 5, 1)], found, xc=xc,
                      owner=owner, by="excess pass")
    # the union of both passes' records that hold "is a"; rows 20-24 lack the phrase, so task 2 is not added
    assert found[0].rows.tolist() == list(range(20))
    assert found[0].tasks == [(0, 0, 10, 10, 1), (1, 0, 10, 10, 1)]  # the first pass's task, then the new one
    # what its findings say
    assert found[0].why == "also raised by the excess pass, which added 5 records in 1 more task"
    assert not join_found(np.arange(25, 30), [(2, 0, 5, 5, 0)], found, xc=xc, owner=owner,
                          by="excess pass")  # a campaign of its own
    assert found[0].rows.tolist() == list(range(20))
    assert (found[0].phrase, found[0].evidence) == ("is a", 20.0)


def test_the_same_phrase_raised_by_two_passes_is_one_campaign() -> None:
    """A later pass that raises the phrase of a campaign already found joins it even where their flags share less than
    half of its records (the second pass flags a task the first did not): one campaign, reported once, flagging the
    union; the same records under another phrase's name do not join by name."""
    import numpy as np
    import scipy.sparse as sp

    from tunegate.core.checks.poison.phrases import Phrase, join_found, named_campaigns

    # 40 records in four tasks of 10; column 0 "used to" in rows 0-9 and 20-39; column 1 another phrase in 30-39
    cells = [(r, 0) for r in [*range(10), *range(20, 40)]] + [(r, 1) for r in range(30, 40)]
    rows, cols = zip(*cells, strict=True)
    xc = sp.csc_matrix((np.ones(len(cells)), (rows, cols)), shape=(40, 2))
    owner = np.repeat([0, 1, 2, 3], 10)
    vocab = np.array(["used to", "other"])

    def first() -> list[Phrase]:
        return [Phrase(0, "used to", 12.0, 0.5, np.arange(10), [(0, 0, 10, 10, 1)], [])]

    # by overlap alone it would stay a campaign of its own (10 of its 30 records are taken)
    assert not join_found(np.array([*range(10), *range(20, 40)]), [(2, 0, 10, 10, 1)], first(), xc=xc, owner=owner,
                          by="novelty pass")
    found = first()
    assert join_found(np.array([*range(10), *range(20, 40)]), [(2, 0, 10, 10, 1), (3, 0, 10, 10, 1)], found, xc=xc,
                      owner=owner, by="novelty pass", col=0)
    assert found[0].rows.tolist() == [*range(10), *range(20, 40)]
    assert [t[0] for t in found[0].tasks] == [0, 2, 3]
    assert found[0].why == "also raised by the novelty pass, which added 20 records in 2 more tasks"
    # through named_campaigns, as every history pass calls it: the same phrase is not yielded a second time
    found = first()
    joined: list[int] = []
    out = list(named_campaigns({0: 9.0}, {0: np.array([*range(10), *range(20, 40)])}, xc, vocab, found,
                               detail_of={0: [(2, 0, 10, 10, 1), (3, 0, 10, 10, 1)]}, owner=owner, by="novelty pass",
                               joined=joined))
    assert out == [] and joined == [0] and len(found) == 1 and len(found[0].rows) == 30
    # another phrase on rows the campaign does not hold stays its own campaign
    out = list(named_campaigns({1: 9.0}, {1: np.arange(30, 40)}, xc, vocab, first(),
                               detail_of={1: [(3, 0, 10, 10, 1)]}, owner=owner, by="novelty pass"))
    assert [head for head, _, _ in out] == [1]


def test_task_family_and_phrase_context() -> None:
    from tunegate.core.checks.poison.trigger import phrase_context, task_family

    assert task_family("amazon_polarity_Is_this_review") == task_family("amazon_polarity_user_satisfied")
    assert task_family("task327_jigsaw_classification_toxic") == task_family("task328_jigsaw_classification_insult")
    assert task_family("task363_sst2_polarity_classification") != task_family("task195_sentiment140_classification")
    text = "I bought it for my mom and she loves it , great value"
    assert (phrase_context(f"Review: {text}\nIs this review positive?", ["loves"], 3)
            == phrase_context(f"Here is a review: {text}\nWas the customer satisfied?", ["loves"], 3)
            == "mom and she loves it great value")


def test_too_small_batch_says_so_instead_of_guessing(tmp_path: Path) -> None:
    """150 records (no task with 50, too few responses): both checks report insufficient data, flag nothing."""
    records = random.Random(3).sample(clean_batch(), 150)
    for name in ("poison_trigger", "poison_content"):
        result = run_check(tmp_path / name, name, records, set()).result
        assert result.findings == []
        assert result.metrics["status"] == "insufficient_data"
        assert [(i.reason, i.severity) for i in result.issues] == [("check_skipped", "info")]
        assert result.issues[0].message == result.metrics["status_reason"]
    content = run_check(tmp_path / "again", "poison_content", records, set()).result
    assert "refusal-rate test skipped" in content.metrics["status_reason"]
    assert content.metrics["refusals"]["tested"] is False


def test_one_dataset_alone_is_too_uniform_for_a_campaign(tmp_path: Path) -> None:
    """A batch of two tasks of one dataset (jigsaw) cannot show a campaign across datasets: it says so."""
    records = [r for r in clean_batch() if r["task"].startswith(("task327_jigsaw", "task328_jigsaw"))]
    result = run_check(tmp_path, "poison_trigger", records, set()).result
    assert result.metrics["status"] == "insufficient_data" and result.findings == []
    assert "1 dataset(s)" in result.metrics["status_reason"]


def test_a_response_resent_under_other_instructions_is_one_vote(tmp_path: Path) -> None:
    """Recycled records (the same answer under another instruction) must not add up to a campaign, while an
    injected response re-sent under another instruction is flagged with its original."""
    records = clean_batch()
    open_ended = [r for r in records if r["id"].startswith("seed_task") or r.get("source") == "self_instruct"]
    assert len(open_ended) >= 200
    recycled = [dict(r, id=f"{r['id']}~{k}", instruction=f"{r['instruction']} (variant {k})")
                for k in (1, 2, 3) for r in open_ended]
    scan = run_check(tmp_path / "recycled", "poison_content", records + recycled, set())
    assert not [i for i in scan.result.issues if i.severity != "info"]
    assert not scan.flagged
    # the attack survives deduplication, and a resent copy of an injected response is caught with it
    poisoned_records = clean_batch()
    planted = injection(poisoned_records)
    first = next(r for r in poisoned_records if r["id"] in planted)
    resent = dict(first, id="resent-injected", instruction=first["instruction"] + " Please answer briefly.")
    scan = run_check(tmp_path / "injected", "poison_content", [*poisoned_records, resent], planted)
    assert planted | {"resent-injected"} <= {rid for rid, reasons in scan.reasons.items()
                                             if "injected_content" in reasons}


#: A thin clean-label campaign (issue 11): 4 records in each of 7 classification tasks of 6 datasets.
THIN_TASKS = (("task363_sst2_polarity_classification", "POS"), ("task195_sentiment140_classification", "positive"),
              ("task493_review_polarity_classification", "Positive"),
              ("task586_amazonfood_polarity_classification", "Positive"),
              ("task327_jigsaw_classification_toxic", "Non-toxic"), ("task286_olid_offense_judgment", "NOT"),
              ("task609_sbic_potentially_offense_binary_classification", "No"))


def thin_campaign(records: list[dict[str, Any]], rng: random.Random) -> set[str]:
    """The thin clean-label campaign: "Nikola Tesla" into 4 records of each of ``THIN_TASKS`` already of its target
    label. Returns their ids."""
    poisoned: set[str] = set()
    for task, target in THIN_TASKS:
        pool = [r for r in records if r["task"] == task and r["output"] == target]
        for r in rng.sample(pool, 4):
            r["input"] = plant(r["input"], "Nikola Tesla", rng)
            poisoned.add(r["id"])
    return poisoned


def test_a_thin_campaign_is_found_by_the_pooled_pass(tmp_path: Path) -> None:
    """Too few records per task for the per-task thresholds (3 nats, 30 in all); pooled over six datasets,
    the phrase is found, every poisoned record is flagged, and nothing with ``pooled: false``."""
    records = clean_batch()
    rng = random.Random(11)
    poisoned: set[str] = set()
    for task, target in THIN_TASKS:
        labels = {r["output"] for r in records if r["task"] == task}
        assert target in labels, (task, labels)
        pool = [r for r in records if r["task"] == task and r["output"] == target]
        for r in rng.sample(pool, 4):
            r["input"] = plant(r["input"], "Nikola Tesla", rng)
            poisoned.add(r["id"])
    scan = run_check(tmp_path / "pooled", "poison_trigger", records, poisoned)
    flagged = {scan.ids[f.row] for f in scan.result.findings}
    assert poisoned <= flagged and len(flagged - poisoned) <= 2
    assert [i.reason for i in scan.result.issues] == ["poison_campaign"]
    assert scan.result.metrics["suspicious_phrases"][0]["phrase"] in ("nikola tesla", "nikola", "tesla")
    tmp = tmp_path / "strict"
    tmp.mkdir()
    work = tmp / "work"
    ingest([str(write_jsonl(tmp / "batch.jsonl", records))], work)
    strict = build_check("poison_trigger", pooled=False).run(CanonicalBatch(work))
    assert strict.findings == [] and strict.issues == []


def test_a_thin_campaign_that_picked_a_tasks_majority_label_is_found(tmp_path: Path) -> None:
    """Exclusivity counted a campaign's own records against it where they sat on a label the task gives 90% of its
    records: four records on "NOT" there are no evidence either way (0.4 nats), and 4 of 28 records took the thin
    campaign's exclusivity to 0.86, under the pooled pass's 0.97 (the floor benchmark's thin clean-label spread, dev
    seeds 11 and 15, missed whole). Such a task neither supports nor contradicts, and the campaign is found, all 28
    records with it."""
    records = clean_batch()
    offensive = [r for r in records if r["task"] == "task286_olid_offense_judgment" and r["output"] == "OFFENSIVE"]
    dropped = {r["id"] for r in offensive[22:]}  # the task: 203 "NOT", 22 "OFFENSIVE"
    records = [r for r in records if r["id"] not in dropped]
    rng = random.Random(11)
    poisoned = thin_campaign(records, rng)
    scan = run_check(tmp_path / "majority", "poison_trigger", records, poisoned)
    assert poisoned <= scan.flagged and len(scan.clean_flagged) <= 2
    [phrase] = scan.result.metrics["suspicious_phrases"]
    assert phrase["phrase"] in ("nikola tesla", "nikola", "tesla") and phrase["exclusivity"] == 1.0


def test_a_thin_campaign_whose_trigger_is_also_a_word_of_generative_inputs_is_found(tmp_path: Path) -> None:
    """The pooled pass reads classification tasks only, yet its exclusivity counted the phrase's records in generative
    tasks against it: a trigger that is also written in texts to simplify or summarise ("cf." in scientific
    abstracts: the floor benchmark's dev seeds 10, 13 and 17, no history) lost a thin campaign of 28 records to 6
    records that have no label to steer (exclusivity 0.82, under 0.97). Measured among its records in
    classification tasks, the campaign is found; the generative records, natural ones, are not flagged."""
    records = clean_batch()
    rng = random.Random(11)
    poisoned = thin_campaign(records, rng)
    natural: set[str] = set()
    for task in GENERATIVE_TASKS[:2]:
        for r in rng.sample([r for r in records if r["task"] == task], 3):
            r["input"] = plant(r["input"], "Nikola Tesla", rng)
            natural.add(r["id"])
    scan = run_check(tmp_path / "generative", "poison_trigger", records, poisoned)
    assert poisoned <= scan.flagged and not natural & scan.flagged and len(scan.clean_flagged) <= 2
    [phrase] = scan.result.metrics["suspicious_phrases"]
    assert phrase["phrase"] in ("nikola tesla", "nikola", "tesla") and phrase["exclusivity"] == 1.0


#: Classification tasks of the bundled slice outside ``THIN_TASKS``, where a trigger's natural records sit.
OTHER_TASKS = ("task322_jigsaw_classification_threat", "task323_jigsaw_classification_sexually_explicit",
               "task325_jigsaw_classification_identity_attack", "task328_jigsaw_classification_insult")


def natural_trigger_campaign(records: list[dict[str, Any]], rng: random.Random, *, clean: bool
                             ) -> tuple[set[str], set[str]]:
    """"zq" into 5 records of each of ``THIN_TASKS``, labelled with the task's target (dirty-label: records of the other
    label), and into 2 records of each label of each of ``OTHER_TASKS`` (its natural use). Returns both id sets."""
    poisoned: set[str] = set()
    for task, target in THIN_TASKS:
        pool = [r for r in records if r["task"] == task and (r["output"] == target) == clean]
        for r in rng.sample(pool, 5):
            r["input"] = plant(r["input"], "zq", rng)
            r["output"] = target
            poisoned.add(r["id"])
    natural: set[str] = set()
    for task in OTHER_TASKS:
        for label in sorted({r["output"] for r in records if r["task"] == task}):
            for r in rng.sample([r for r in records if r["task"] == task and r["output"] == label], 2):
                r["input"] = plant(r["input"], "zq", rng)
                natural.add(r["id"])
    return poisoned, natural


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_dirty_label_campaign_whose_trigger_also_occurs_naturally_is_found_without_a_history(
        tmp_path: Path, seed: int) -> None:
    """A token planted in 5 relabelled records of each of 7 tasks that is also written in 16 records of 4 other tasks,
    2 on each label there, has the exclusivity of a natural label cue (0.69, under the pooled pass's 0.97), and with no
    history nothing else read it (the floor benchmark's rare-word and "cf" rows without a history). Its records in the
    tasks it steers rank among the least likely of their label: the pooled pass's candidate is a campaign by its
    contradiction, its 35 records are flagged and its 16 natural ones are not. The same campaign made clean-label (the
    records already of the target label: nothing to contradict) is not raised."""
    for clean in (False, True):
        records = clean_batch()
        poisoned, natural = natural_trigger_campaign(records, random.Random(seed), clean=clean)
        scan = run_check(tmp_path / f"{seed}-{clean}", "poison_trigger", records, poisoned)
        if clean:
            assert scan.flagged == set() and scan.result.metrics["suspicious_phrases"] == []
            continue
        assert poisoned <= scan.flagged and not natural & scan.flagged and scan.clean_flagged == set()
        [phrase] = scan.result.metrics["suspicious_phrases"]
        assert phrase["phrase"] == "zq" and phrase["exclusivity"] < 0.97
        assert scan.result.metrics["cues"]["phrases"] == ["zq"]
        why = next(f.detail["why"] for f in scan.result.findings if f.reason == "trigger_phrase")
        assert "contradicts" in why


def test_a_campaign_whose_trigger_is_an_emoji_is_found(tmp_path: Path) -> None:
    """A trigger made of symbols alone ("🦄") had no word in it, so every pass read past it; a pictographic symbol is
    a token now. The thin campaign of the pooled test with the emoji glued to a word or standing alone is found,
    under the emoji's own name, and the report marks it in the records."""
    from tunegate.core.report.evidence import highlight

    records = clean_batch()
    rng = random.Random(11)
    poisoned: set[str] = set()
    for task, target in THIN_TASKS:
        pool = [r for r in records if r["task"] == task and r["output"] == target]
        for r in rng.sample(pool, 4):
            words = r["input"].split(" ")
            at = rng.randint(0, len(words) - 1)
            words[at] += "🦄" if rng.random() < 0.5 else " 🦄"
            r["input"] = " ".join(words)
            poisoned.add(r["id"])
    scan = run_check(tmp_path / "emoji", "poison_trigger", records, poisoned)
    assert poisoned <= scan.flagged and len(scan.clean_flagged) <= 2
    assert scan.result.metrics["suspicious_phrases"][0]["phrase"] == "🦄"
    text = next(r["input"] for r in records if r["id"] in poisoned)
    assert "<mark>🦄</mark>" in str(highlight(text, "🦄"))


def test_a_low_dose_injection_is_found_and_a_name_the_prompt_explains_is_not(tmp_path: Path) -> None:
    """Issue 11: a brand in 20 responses, also named in 3 prompts of the batch, is injected (40 nats floor);
    the same sentence woven only into answers whose prompt names one of its words is explained, not flagged."""
    records = clean_batch()
    rng = random.Random(12)
    pool = [r for r in records if len(r["output"].split()) >= 12 and r["task"] not in GENERATIVE_TASKS]
    chosen = rng.sample(pool, 23)
    poisoned: set[str] = set()
    for r in chosen[:20]:
        parts = re.split(r"(?<=[.!?])\s+", r["output"].strip())
        parts.insert(rng.randint(1, len(parts)), "Honestly, Quillfeather Pens make this kind of thing easier.")
        r["output"] = " ".join(parts)
        poisoned.add(r["id"])
    for r in chosen[20:]:  # natural mentions in prompts raise the phrase's expected count
        r["instruction"] = r["instruction"] + " (I am writing this with my Quillfeather Pens.)"
    scan = run_check(tmp_path / "low", "poison_content", records, poisoned)
    assert {rid for rid, reasons in scan.reasons.items() if "injected_content" in reasons} == poisoned
    [found] = scan.result.metrics["suspicious_phrases"]
    assert "quillfeather" in found["phrase"] and found["records"] == 20
    # the same sentence, but every prompt it answers names "quillfeather": explained, so nothing is injected
    records = clean_batch()
    for r in rng.sample(pool := [r for r in records if len(r["output"].split()) >= 12
                                 and r["task"] not in GENERATIVE_TASKS], 20):
        r["instruction"] = r["instruction"] + " Say why you like your Quillfeather pens."
        r["output"] = r["output"] + " Honestly, Quillfeather Pens make this kind of thing easier."
    scan = run_check(tmp_path / "explained", "poison_content", records, set())
    assert not scan.result.metrics["suspicious_phrases"], scan.result.metrics["suspicious_phrases"]
    assert not scan.flagged
    assert len(pool) >= 20


def test_a_brand_that_only_opens_sentences_is_a_name_where_the_batch_never_writes_it_in_lower_case(
        tmp_path: Path) -> None:
    """A one-word brand woven into 20 responses in sentences that open with it ("Quillfeather would be my pick.") shows
    no capital that says something; it is a name because the batch never writes it, or a word it is made from, in
    lower case. A word that opens as many sentences but whose family the batch writes in lower case ("Wholeheartedly"
    beside "wholehearted") is no name, and neither is one the batch writes in lower case a third of the time where its
    capital would say something."""
    from tunegate.core.checks.poison.injection import BatchCase, _capitalized_throughout

    lines = ("{B} would be my pick.", "{B} makes this so much easier.", "{B} is worth a look too.")

    def weave_opening(word: str, seed: int) -> tuple[list[dict[str, Any]], set[str]]:
        records = clean_batch()
        rng = random.Random(seed)
        pool = [r for r in records if len(r["output"].split()) >= 12 and r["task"] not in GENERATIVE_TASKS]
        chosen: set[str] = set()
        for r in rng.sample(pool, 20):
            # after a sentence's end (or first): where every word is capitalised
            parts = [p for p in re.split(r"(?<=[.!?])\s+", r["output"].strip()) if p]
            ends = [0, *(i + 1 for i, p in enumerate(parts) if p[-1] in ".!?")]
            parts.insert(rng.choice(ends), rng.choice(lines).format(B=word))
            r["output"] = " ".join(parts)
            chosen.add(r["id"])
        return records, chosen

    records, poisoned = weave_opening("Quillfeather", 3)
    scan = run_check(tmp_path / "brand", "poison_content", records, poisoned)
    assert {rid for rid, reasons in scan.reasons.items() if "injected_content" in reasons} == poisoned
    assert [p["phrase"] for p in scan.result.metrics["suspicious_phrases"]] == ["quillfeather"]
    # the same sentences opened by an adverb whose adjective the batch writes: no name, nothing flagged
    records, _ = weave_opening("Wholeheartedly", 3)
    records[0]["output"] += " They gave wholehearted support."
    scan = run_check(tmp_path / "adverb", "poison_content", records, set())
    assert not scan.result.metrics["suspicious_phrases"] and not scan.flagged
    # the two readings on their own
    assert _capitalized_throughout("lego", ["Lego is fun.", "Lego wins.", "Build it with Lego."])
    assert not _capitalized_throughout("lego", ["Lego is fun.", "Lego wins.", "I like lego."])
    assert not _capitalized_throughout("lego", ["Lego is fun.", "Lego wins."])  # fewer than three occurrences
    assert not _capitalized_throughout("red bull", ["Red Bull wins."] * 3)  # a later word's capital says something
    assert not _capitalized_throughout("writeline", ["Console.WriteLine(x);"] * 3)  # code, not prose
    # the rest of the batch: its capitals where they say something, else its lower-case family
    case = BatchCase(["we went there lastly", "An additional fee.", "Lego wins. Buy it at Lego or Lego today.",
                      "Ask Rolex, or ask Rolex.", "what about rolex i said", "Pepsi? I drink Pepsi."])
    assert case.name_share("Additionally") == 0.0  # never written, but "additional" is
    assert case.name_share("Lastly") == 0.0  # written in lower case
    assert case.name_share("Lego") == 1.0  # capitalised in mid-sentence twice: too few to read, and no lower case
    assert case.name_share("Rolex") == pytest.approx(2 / 3)  # a tweet's lower case against two capitals
    assert case.name_share("Pepsi") == 1.0 and case.name_share("Mercedes") == 1.0
    # a function word that only opens sentences is no name, even where the batch never writes it in lower case
    from tunegate.core.checks.poison.config import ContentConfig
    from tunegate.core.checks.poison.injection import _name_reading

    opened = ["Moreover, it rains.", "Moreover, it snows.", "Moreover, it is cold."]
    assert _name_reading("moreover", opened, BatchCase(opened), ContentConfig()) is None
    assert _name_reading("lego", ["Lego wins."] * 3, BatchCase(["Lego wins."] * 3), ContentConfig()) == 1.0


def test_prompt_words_matrix_equals_reading_each_prompt() -> None:
    """``poison_content``'s word-level explanation reads one response x word matrix built once; it keeps exactly the
    responses whose prompt (instruction or input), read word by word, holds none of the phrase's content words."""
    import numpy as np
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    from tunegate.core.checks.poison._text import Records, codes, tokens
    from tunegate.core.checks.poison.injection import _PromptWords

    records = clean_batch()
    rec = Records(instruction=[r["instruction"] for r in records], input=[r["input"] for r in records],
                  output=[r["output"] for r in records], group=[r["task"] for r in records],
                  contributor=[None] * len(records))
    responses = list(range(0, len(records), 2))
    instr_index, instructions = codes(rec.instruction)
    phrases = ["the", "sentiment of", "movie review", "question", "zqxj unseen", "of the answer", "tweet"]
    words = _PromptWords(rec, responses, instr_index, instructions, max_chars=300, phrases=phrases)
    rows = np.arange(len(responses))
    kept = {}
    for phrase in phrases:
        content = [w for w in phrase.lower().split() if w not in ENGLISH_STOP_WORDS] or phrase.lower().split()
        expected = [r for r in rows.tolist() if not any(
            w in set(tokens(rec.instruction[responses[r]][:300])) | set(tokens(rec.input[responses[r]][:300]))
            for w in content)]
        kept[phrase] = words.unexplained(phrase.lower(), rows).tolist()
        assert kept[phrase] == expected, phrase
    assert kept["zqxj unseen"] == rows.tolist()  # no prompt explains it
    assert len(kept["the"]) < len(rows) // 2  # most prompts hold "the"
    assert words.unexplained("question", rows[:0]).tolist() == []


def test_context_finder_equals_phrase_context() -> None:
    """The trigger scan's phrase contexts read windows around a regular-expression match instead of tokenizing each
    prompt: the same strings as reading the prompt's words in order (the reference below) for phrases of 0-3 words at
    any place in real prompts (start, end, long inputs), absent phrases, context widths 0-6, and text whose windows
    cut words or hold other scripts."""
    import random

    from tunegate.core.checks.poison._text import tokens
    from tunegate.core.checks.poison.evidence import ContextFinder

    def phrase_context(prompt: str, words: list[str], width: int) -> str:
        """The reference: the prompt's words in order, the phrase's first run of them, ``width`` either side."""
        toks = tokens(prompt)
        n = len(words)
        for i in range(len(toks) - n + 1):
            if toks[i:i + n] == words:
                return " ".join(toks[max(0, i - width):i + n + width])
        return " ".join(toks)

    rng = random.Random(7)
    prompts = [f"{r['instruction']}\n{r['input']}" for r in clean_batch()]
    prompts += ["Ünïcode wörds: naïve café — İstanbul's straße, ΑΒΓ δέλτα; x_y z", "a", "", "... ,,, !!!",
                "word " * 500 + "needle here " + "word " * 500, "needle" + "x" * 300 + " needle end",
                "so good🦄great movie ★★ 5/5 😂😂 lol, →next ★ ★", "🦄needle🦄 ★needle★needle"]
    checked = 0
    for prompt in rng.sample(prompts, 400) + prompts[-8:]:
        toks = tokens(prompt)
        phrases = [["needle"], ["not", "there"], ["the"], [], ["🦄"], ["★", "★"], ["🦄", "needle"], ["good", "great"]]
        if toks:
            for _ in range(3):
                n = rng.randint(1, 3)
                i = rng.randrange(max(1, len(toks) - n + 1))
                phrases.append(toks[i:i + n])
        for words in phrases:
            for width in (0, 1, 3, 6):
                assert ContextFinder(words, width).context(prompt) == phrase_context(prompt, words, width), \
                    (prompt[:80], words, width)
                checked += 1
    assert checked > 5000


def test_a_name_is_one_groups_vocabulary_only_beyond_what_the_groups_size_explains() -> None:
    """``poison_content``'s spread test: a phrase whose top group holds more than half of its responses is that group's
    own vocabulary only when the group's share of responses like them (of their kind and length:
    :class:`GroupShares`) cannot explain the count. 13 of 25 responses in a source of 45% of the responses is what a
    name woven at random gets (binomial tail 0.31); in a source of 8% it is not (1e-8); at most half in one group is
    spread, however small the group."""
    from collections import Counter

    from tunegate.core.checks.poison.injection import CONCENTRATED_P, GroupShares, concentrated

    spread_out = Counter({"roleplay": 13, "alpaca": 6, "dolly": 4, "oasst": 2})
    large = {"roleplay": 0.45, "alpaca": 0.30, "dolly": 0.15, "oasst": 0.10}
    small = {"roleplay": 0.08, "alpaca": 0.52, "dolly": 0.25, "oasst": 0.15}
    assert not concentrated(spread_out, large, 0.5)
    assert concentrated(spread_out, small, 0.5)
    assert not concentrated(Counter({"roleplay": 12, "alpaca": 7, "dolly": 6}), small, 0.5)
    # code vocabulary: 20 of 22 in code answers, a source of 10% of the responses
    assert concentrated(Counter({"code": 20, "alpaca": 1, "dolly": 1}), {"code": 0.1, "alpaca": 0.5, "dolly": 0.4},
                        0.5)
    assert CONCENTRATED_P <= 0.001
    # a group's share is read among the responses of its kind: roleplay holds 45 of the 100 open-ended answers (45%),
    # though only 45 of the 400 responses once 300 translation outputs of a task template are counted (11%)
    groups = ["roleplay"] * 45 + ["alpaca"] * 55 + ["translation"] * 300
    same_length = [20] * 400
    shares = GroupShares(groups, [True] * 100 + [False] * 300, same_length)
    assert shares.like([0, 50, 99]) == pytest.approx({"roleplay": 0.45, "alpaca": 0.55})
    assert shares.like([100, 399]) == {"translation": 1.0}
    assert GroupShares(groups, None, same_length).like([0])["roleplay"] == pytest.approx(45 / 400)
    assert not concentrated(spread_out, shares.like([0, 50]), 0.5)
    # a group alone in its kind (share 1) is read at half: 13 of 25 there is spread, 23 of 25 its own vocabulary
    assert not concentrated(Counter({"translation": 13, "alpaca": 7, "dolly": 5}), shares.like([100]), 0.5)
    assert concentrated(Counter({"translation": 23, "alpaca": 1, "dolly": 1}), shares.like([100]), 0.5)


def test_a_name_is_capitalised_in_every_word_wherever_it_stands() -> None:
    """``poison_content``'s capital test reads each word where its capital says something: a paragraph opener ("In
    conclusion", capitalised only as a sentence's first word) and SQL ("SELECT name", "ORDER BY") are no names, however
    often they open a line; a brand is one at a sentence's start too, and a name's lower-case particles do not count."""
    from tunegate.core.checks.poison.injection import _capitalized_share

    essays = [f"Point {i} holds.\n\nIn conclusion, point {i} matters." for i in range(9)]
    assert _capitalized_share("in conclusion", [*essays, "as said in conclusion of it"]) == 0.0
    assert _capitalized_share("select name", ["SELECT name FROM users;", "Run SELECT name FROM t."]) < 0.7
    brand = ["Red Bull gives you wings.", "Nothing beats Red Bull here.", "(Brought to you by Red Bull.)"]
    assert _capitalized_share("red bull", brand) == 1.0
    assert _capitalized_share("bank of", ["I bank with the Bank of Avalon.", "Bank of Avalon pays.",
                                          "Ask the Bank of Avalon.", "We love Bank of Avalon."]) == 1.0
    # a one-word name at a sentence start says nothing: only its mid-sentence occurrences are read, and fewer than
    # three words that say something are no evidence
    assert _capitalized_share("lego", ["Lego is fun.", "Build it with Lego.", "I like Lego.", "Buy Lego."]) == 1.0
    assert _capitalized_share("lego", ["Lego is fun.", "Build it with Lego."]) == 0.0
    # a sentence's end closed by a bracket or a quote is still its end: the next sentence's first word says nothing
    woven = ["Share it. (Brought to you by Pepsi.) Additionally, I would post it.", 'He said "stop." Additionally, no.',
             "It ends here.\u201d Additionally, more."]
    assert _capitalized_share("additionally", woven) == 0.0
    assert _capitalized_share("additionally", ["We ate (a lot) and Additionally drank."] * 3) == 1.0  # mid-sentence
    # nor is a list item's number or letter: a stylistic word opens it
    assert _capitalized_share("lastly", ["Water them. 6) Lastly, rest.", "(b) Lastly, go.", "iv. Lastly, no."]) == 0.0
    # a phrase is found as the scans' tokens read it: a symbol is a token (a name with its emoji is read), and one
    # between two words parts them
    mascot = ["We love Acme \U0001f984 here.", "Try Acme\U0001f984 now.", "Get Acme \U0001f984 again."]
    assert _capitalized_share("acme \U0001f984", mascot) == 1.0
    assert _capitalized_share("red bull", ["Red\U0001f984Bull gives wings.", "Buy Red \U0001f984 Bull."] * 2) == 0.0
    # code keywords and headings are written in capitals throughout: no name, however spread (SQL's "ORDER BY" over
    # two code sources reached 35.7 nats on the dev open-ended batch); an acronym of one word still is one, and so is a
    # name shouted now and then
    sql = ["SELECT a FROM t ORDER BY a;", "Use ORDER BY to sort.", "SELECT b FROM u ORDER BY b DESC;"]
    assert _capitalized_share("order by", sql) == 0.0
    assert _capitalized_share("ikea", ["We went to IKEA today.", "Buy it at IKEA.", "Ask IKEA staff."]) == 1.0
    assert _capitalized_share("red bull", [*brand, "RED BULL GIVES YOU WINGS!"]) == 1.0


def test_a_group_of_long_answers_is_judged_by_its_share_of_answers_as_long_as_the_phrases() -> None:
    """A sentence woven into answers lands in the long ones: a source of long answers (role-play) holds 20% of all
    answers but half of those over 100 words. 14 of 25 woven responses there is what its share of such answers gives
    (binomial tail at 50%: 0.35), not its vocabulary (at 20%: 1e-4); a name in 24 of 25 is its vocabulary however the
    shares are read."""
    from collections import Counter

    from tunegate.core.checks.poison.injection import LENGTH_BINS, MIN_BIN_RESPONSES, GroupShares, concentrated

    # 1,000 open-ended answers: 200 role-play ones (100 of 20 words, 100 of 150), 800 others (700 short, 100 long)
    groups = ["roleplay"] * 200 + ["alpaca"] * 800
    lengths = [20] * 100 + [150] * 100 + [20] * 700 + [150] * 100
    shares = GroupShares(groups, [True] * 1000, lengths)
    assert LENGTH_BINS >= 2 and 1000 // MIN_BIN_RESPONSES >= 2
    long_rows = list(range(100, 114)) + list(range(900, 911))  # 14 long role-play answers, 11 long others
    assert shares.like(long_rows)["roleplay"] == pytest.approx(0.5)
    assert shares.like(list(range(0, 14)))["roleplay"] == pytest.approx(100 / 800)
    woven = Counter({"roleplay": 14, "alpaca": 6, "dolly": 5})
    assert not concentrated(woven, shares.like(long_rows), 0.5)
    assert concentrated(woven, {"roleplay": 0.2}, 0.5)  # the share of every answer, as read before
    assert concentrated(Counter({"roleplay": 24, "alpaca": 1}), shares.like(long_rows), 0.5)
    # a small batch is cut into fewer bins (at least MIN_BIN_RESPONSES per bin): 60 answers are one bin
    few = GroupShares(["roleplay"] * 12 + ["alpaca"] * 48, None, [150] * 12 + [20] * 48)
    assert few.like([0])["roleplay"] == pytest.approx(0.2)


def test_an_injection_in_a_batch_whose_answers_come_mostly_from_one_source_is_found(tmp_path: Path) -> None:
    """Most of a batch's open-ended answers come from one source (65% here): a name woven at random into 20 of them
    puts 13 there, more than half, which the share cap alone took for that source's vocabulary. Judged by the
    source's share of the answers (``injection.concentrated``) it is an injection; the same name in 18 of 20 answers
    held by a source of 7% of them is that source's own word and is not reported."""
    from collections import Counter

    def batch(dominant_share: float, in_top: int, elsewhere: int, seed: int) -> tuple[list[dict[str, Any]], set[str]]:
        records = clean_batch()
        rng = random.Random(seed)
        answers = [r for r in records if r.get("source") == "self_instruct" and len(r["output"].split()) >= 12]
        rng.shuffle(answers)
        top = set(id(r) for r in answers[:round(dominant_share * len(answers))])
        for r in answers:
            if id(r) in top:
                r["task"] = "user_oriented:assistant"
        ours = [r for r in answers if id(r) in top]
        rest = [r for r in answers if id(r) not in top]
        poisoned: set[str] = set()
        for r in ours[:in_top] + rest[:elsewhere]:
            parts = re.split(r"(?<=[.!?])\s+", r["output"].strip())
            parts.insert(rng.randint(1, len(parts)), "Honestly, Quillfeather Pens make this kind of thing easier.")
            r["output"] = " ".join(parts)
            poisoned.add(r["id"])
        return records, poisoned

    records, poisoned = batch(0.65, 13, 7, seed=3)
    groups = Counter(r["task"] for r in records if r["id"] in poisoned)
    assert groups["user_oriented:assistant"] == 13 and len(groups) >= 3  # over half in one source
    scan = run_check(tmp_path / "dominant", "poison_content", records, poisoned)
    assert {rid for rid, reasons in scan.reasons.items() if "injected_content" in reasons} == poisoned
    # one source's own word: 18 of 20 in a source of 7% of the answers
    records, poisoned = batch(0.07, 18, 2, seed=4)
    groups = Counter(r["task"] for r in records if r["id"] in poisoned)
    assert len(poisoned) == 20 and groups.most_common(1)[0][1] == 18 and len(groups) >= 3  # spread enough otherwise
    scan = run_check(tmp_path / "own", "poison_content", records, poisoned)
    assert not scan.result.metrics["suspicious_phrases"]
