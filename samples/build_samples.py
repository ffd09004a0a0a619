"""Rebuild the bundled sample data from ../shared/corpora (maintainers only; outputs are committed).

    python samples/build_samples.py [--corpora ../shared/corpora]

Writes:
  tests/data/superni_slice.jsonl.gz   real Super-NaturalInstructions records (Apache-2.0, see ATTRIBUTION.md)
  tests/data/formats/*                the same records re-encoded in every input format tunegate reads
  samples/nightly/batch.jsonl         the demo batch: real records plus planted problems (listed below)
  samples/nightly-2/batch.jsonl       the demo's second night: new real records plus light edits of night one's
Deterministic: a fixed seed and sorted selections, so a rebuild reproduces the committed files byte for byte.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import random
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Classification tasks get more records: label-consistency and trigger checks need per-task statistics.
CLASSIFICATION = {
    "task363_sst2_polarity_classification": 300,
    "task195_sentiment140_classification": 300,
    "task493_review_polarity_classification": 300,
    "task586_amazonfood_polarity_classification": 300,
    "task327_jigsaw_classification_toxic": 300,
    "task328_jigsaw_classification_insult": 300,
    "task609_sbic_potentially_offense_binary_classification": 300,
    "task286_olid_offense_judgment": 300,
}
GENERATIVE = {
    "task288_gigaword_summarization": 120,
    "task177_para-nmt_paraphrasing": 120,
    "task041_qasc_answer_generation": 120,
    "task1091_ted_translation_en_it": 120,
    "task239_tweetqa_answer_generation": 120,
    "task102_commongen_sentence_generation": 120,
    "task669_ambigqa_answer_generation": 120,
    "task111_asset_sentence_simplification": 120,
    "task080_piqa_answer_generation": 60,
    "task379_agnews_topic_classification": 60,
    "task629_dbpedia_14_classification": 60,
    "task616_cola_classification": 60,
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpora", default=str(ROOT.parent / "shared" / "corpora"))
    args = ap.parse_args()
    quota = CLASSIFICATION | GENERATIVE
    by_task: dict[str, list[dict]] = defaultdict(list)
    with gzip.open(Path(args.corpora) / "superni.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            if rec["task"] in quota:
                by_task[rec["task"]].append(rec)
    rng = random.Random(20230101)
    records: list[dict] = []
    for task in sorted(quota):
        pool = by_task[task]
        records += sorted(rng.sample(pool, min(quota[task], len(pool))), key=lambda r: r["id"])
    data = ROOT / "tests" / "data"
    data.mkdir(parents=True, exist_ok=True)
    with gzip.GzipFile(data / "superni_slice.jsonl.gz", "wb", mtime=0) as gz:
        for rec in records:
            gz.write((json.dumps(rec, ensure_ascii=False) + "\n").encode("utf-8"))
    _formats(records, data / "formats")
    _nightly(records, ROOT / "samples" / "nightly")
    _nightly_two(records, ROOT / "samples" / "nightly" / "batch.jsonl", ROOT / "samples" / "nightly-2")
    print(f"{len(records)} records from {len(quota)} tasks")


def _formats(records: list[dict], out: Path) -> None:
    """The same 20 real records in each input format (as those formats name their fields)."""
    out.mkdir(parents=True, exist_ok=True)
    sample = [r for r in records if r["task"] == "task363_sst2_polarity_classification"][:10]
    sample += [r for r in records if r["task"] == "task288_gigaword_summarization"][:10]
    alpaca = [{"instruction": r["instruction"], "input": r["input"], "output": r["output"], "id": r["id"]}
              for r in sample]
    (out / "alpaca.json").write_text(json.dumps(alpaca, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    with open(out / "dolly.jsonl", "w", encoding="utf-8") as f:
        for r in sample:
            f.write(json.dumps({"instruction": r["instruction"], "context": r["input"], "response": r["output"],
                                "category": r["task"]}, ensure_ascii=False) + "\n")
    with open(out / "openai.jsonl", "w", encoding="utf-8") as f:
        for r in sample:
            msgs = [{"role": "system", "content": r["instruction"]}, {"role": "user", "content": r["input"]},
                    {"role": "assistant", "content": r["output"]}]
            f.write(json.dumps({"messages": msgs, "id": r["id"]}, ensure_ascii=False) + "\n")
    sharegpt = [{"id": r["id"], "conversations": [{"from": "human", "value": r["instruction"] + "\n\n" + r["input"]},
                                                  {"from": "gpt", "value": r["output"]}]} for r in sample]
    (out / "sharegpt.json").write_text(json.dumps(sharegpt, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    task = [r for r in sample if r["task"] == "task363_sst2_polarity_classification"]
    superni = {"Contributors": ["Super-NaturalInstructions"], "Source": ["sst2"],
               "Categories": ["Sentiment Analysis"],
               "Definition": [task[0]["instruction"]],
               "Instances": [{"id": r["id"], "input": r["input"], "output": [r["output"]]} for r in task]}
    (out / "task363_sst2_polarity_classification.json").write_text(
        json.dumps(superni, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    with open(out / "alpaca.csv", "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "instruction", "input", "output", "task"])
        for r in sample:
            w.writerow([r["id"], r["instruction"], r["input"], r["output"], r["task"]])
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(alpaca), out / "alpaca.parquet")


def _nightly(records: list[dict], out: Path) -> None:
    """The demo batch: 1,000 real records and planted problems a gate must catch.

    Planted: 2 malformed JSON lines, 1 wrong-typed field, 1 line of invalid UTF-8 (all -> rejected);
    6 exact duplicates, 3 empty responses, 1 runaway 20,000-character response (all -> quarantined).
    """
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(7)
    batch = sorted(rng.sample(records, 1000), key=lambda r: r["id"])
    lines = [json.dumps(r, ensure_ascii=False).encode("utf-8") for r in batch]
    for i in rng.sample(range(len(batch)), 6):
        lines.append(json.dumps(batch[i], ensure_ascii=False).encode("utf-8"))
    for n, i in enumerate(rng.sample(range(len(batch)), 3)):
        lines.append(json.dumps(batch[i] | {"id": f"planted-empty-{n}", "output": ""}).encode("utf-8"))
    lines.append(json.dumps(batch[0] | {"id": "planted-runaway", "output": "very " * 4000}).encode("utf-8"))
    lines.append(b'{"instruction": "Summarize the text.", "input": "truncated export')
    lines.append(b'{"instruction": "Classify.", "input": "x", "output": ["POS"], "id": "planted-wrong-type"}')
    lines.append(b'{"instruction": "Translate.", "input": "caf\xe9 au lait", "output": "coffee", '
                 b'"id": "planted-latin1"}')
    lines.append(b"not json at all")
    order = list(range(len(lines)))
    rng.shuffle(order)
    (out / "batch.jsonl").write_bytes(b"\n".join(lines[i] for i in order) + b"\n")


def _nightly_two(records: list[dict], night_one: Path, out: Path) -> None:
    """The demo's second night: 400 real records night one did not have, plus 12 light edits (a typo, doubled
    spaces, an inserted word) of records night one accepted: the history catches them as near-duplicates."""
    out.mkdir(parents=True, exist_ok=True)
    first = []
    for line in night_one.read_bytes().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # the planted malformed lines
        if isinstance(rec, dict) and isinstance(rec.get("output"), str) and rec["output"]:
            first.append(rec)
    seen = {r["id"] for r in first}
    rng = random.Random(8)
    fresh = sorted(rng.sample([r for r in records if r["id"] not in seen], 400), key=lambda r: r["id"])
    originals = sorted(rng.sample([r for r in first if len(r["input"]) >= 120 and not r["id"].startswith("planted")],
                                  12), key=lambda r: r["id"])
    edits = []
    for n, rec in enumerate(originals):
        words = rec["input"].split(" ")
        if n % 3 == 0:
            i = rng.randrange(1, len(rec["input"]) - 1)
            text = rec["input"][:i] + rec["input"][i + 1:]
        elif n % 3 == 1:
            text = "  ".join(words)
        else:
            words.insert(len(words) // 2, "really")
            text = " ".join(words)
        edits.append(rec | {"id": f"resubmitted-{rec['id']}", "input": text})
    batch = fresh + edits
    rng.shuffle(batch)
    (out / "batch.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in batch),
                                     encoding="utf-8")


if __name__ == "__main__":
    main()
