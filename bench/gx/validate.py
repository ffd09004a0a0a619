"""One validation run over an ingested work directory, for timing under /usr/bin/time -v.

    python bench/gx/validate.py gx WORK        # tunegate's GxSuiteCheck, both default suites
    python bench/gx/validate.py pandas WORK    # the same rules as plain pandas, same chunking

Prints `flagged=<rows> seconds=<validation seconds, imports excluded>`.
"""

from __future__ import annotations

import re
import sys
import time

CHUNK = 100_000


def run_gx(work: str) -> tuple[int, float]:
    from tunegate.core.checks import CanonicalBatch, build_check

    checks = [build_check("gx_suite", suite=s, data_docs=False) for s in ("instruction_record", "instruction_quality")]
    batch = CanonicalBatch(work)
    t = time.perf_counter()
    rows: set[int] = set()
    for c in checks:
        rows |= {f.row for f in c.run(batch).findings}
    return len(rows), time.perf_counter() - t


def _runaway(text: str) -> bool:
    from tunegate.core.gx_expectations import repeated_fraction

    words, frac = repeated_fraction(text, 3)
    return words >= 40 and frac > 0.75


def run_pandas(work: str) -> tuple[int, float]:
    import pandas as pd
    import pyarrow.parquet as pq

    from tunegate.core.gx_expectations import derive_label_sets, normalize_text

    t = time.perf_counter()
    pf = pq.ParquetFile(f"{work}/canonical.parquet")
    cols = ["id", "instruction", "input", "output", "task", "content_sha256"]
    whole = pf.read(columns=["id", "content_sha256", "task", "output"]).to_pandas()
    collide = whole.groupby("id")["content_sha256"].transform("nunique") > 1
    label_sets = {k: set(v) for k, v in derive_label_sets(zip(whole["task"], whole["output"], strict=True)).items()}
    flagged = set(whole.index[collide])
    del whole
    control = "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"
    template = ("<noinput>|<no ?input>|\\{(?:instruction|input|output|prompt|response)\\}"
                "|### ?(?:Instruction|Response|Input):|<\\|im_(?:start|end)\\|>|\\[/?INST\\]|<</?SYS>>")
    mojibake = "\u00e2\u0080[\u0093\u0094\u0098\u0099\u009c\u009d\u00a6]|\u00c3[\u00a0-\u00bf]\u00c2"
    refusal = re.compile(r"(?i)\bas an ai (?:language )?model\b"
                         r"|^\s*i(?:'m| am) sorry,? but i (?:can(?:no|')t|am unable|won't)"
                         r"|^\s*i (?:can(?:no|')t|am unable to|won't) (?:help|assist|comply|provide) with (?:that|this)"
                         r"|\bi(?:'m| am) not able to (?:help|assist) with (?:that|this)")
    start = 0
    for rb in pf.iter_batches(batch_size=CHUNK, columns=cols):
        df = rb.to_pandas()
        bad = df["id"].isna()
        for c in ("instruction", "output"):
            bad |= ~df[c].str.contains(r"\S")
        bad |= df["instruction"].str.len() > 32768
        bad |= (df["input"].str.len() > 32768) | (df["output"].str.len() > 16384)
        for c in ("instruction", "input", "output"):
            bad |= df[c].str.contains(control) | df[c].str.contains(template) | df[c].str.contains(mojibake)
        bad |= df["output"].map(_runaway)
        a, b = df["instruction"].map(normalize_text), df["output"].map(normalize_text)
        bad |= (a != "") & (a == b)
        bad |= df["output"].str.contains(refusal)
        bad |= pd.Series([t in label_sets and o.strip() not in label_sets[t] for t, o in zip(df["task"], df["output"],
                                                                                         strict=True)], index=df.index)
        flagged |= {start + i for i in df.index[bad]}
        start += len(df)
    return len(flagged), time.perf_counter() - t


if __name__ == "__main__":
    kind, work = sys.argv[1], sys.argv[2]
    n, secs = run_gx(work) if kind == "gx" else run_pandas(work)
    print(f"flagged={n} seconds={secs:.2f}")
