"""The peer for `tunegate scan`: the same I/O and checks written as a plain script with `datasets` + pandas.

Loads the JSONL with `datasets.load_dataset("json")` (what most curation scripts do), drops exact
duplicates over instruction/input/output, applies the instruction_record suite's rules as pandas
expressions, and writes accepted/quarantine Parquet. No per-record provenance, no rejected-line
handling (one malformed line fails the whole load), no report: the floor a gate must stay close to.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path


def main(src: str, out: str) -> None:
    import datasets

    datasets.disable_progress_bars()
    with tempfile.TemporaryDirectory() as cache:
        ds = datasets.load_dataset("json", data_files=src, split="train", cache_dir=cache)
        df = ds.to_pandas()
    dup = df.duplicated(subset=["instruction", "input", "output"], keep="first")
    blank_i = ~df["instruction"].str.contains(r"\S", regex=True)
    blank_o = ~df["output"].str.contains(r"\S", regex=True)
    too_long = df["instruction"].str.len() > 32768
    too_long |= (df["input"].str.len() > 32768) | (df["output"].str.len() > 16384)
    bad = dup | blank_i | blank_o | too_long
    Path(out).mkdir(parents=True, exist_ok=True)
    df[~bad].to_parquet(Path(out) / "accepted.parquet")
    df[bad].to_parquet(Path(out) / "quarantine.parquet")
    print(f"peer: {len(df)} records, {int((~bad).sum())} accepted, {int(bad.sum())} quarantined", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
