"""Train the candidate model of a fine-tuning run, and hold out the prompts its post-tune audit sends.

The fine-tuning DAG trains on the batch it was given (the newest accepted night, released follow-up files).
Until a real fine-tuning job plugs in, the candidate is the canary classifier
(:class:`~tunegate.core.audit.canary.CanaryModel`): cheap, and steered by a planted trigger the way a tuned
model is. One in ``heldout_fraction`` records (by a seeded hash of its ``content_sha256``: the same split on
every rerun, whatever the row order) is held out of training; the post-tune audit probes the model with those
prompts, which it has never seen.

A candidate directory (one per fine-tuning run; a rerun of the run replaces it)::

    model/              the saved model (replaced in one rename)
    heldout.parquet     the held-out records (canonical schema)
    candidate.json      written last: what was trained on, the split, the model's tasks
    audit.json          the post-tune audit (tunegate.core.audit.posttune), audit.html its page
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunegate.core.io import atomic_write, write_json_atomic
from tunegate.exceptions import ConfigError, InputError

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)

MODEL_DIR = "model"
HELDOUT_FILE = "heldout.parquet"
MANIFEST_FILE = "candidate.json"
#: Share of the batch held out of training for the audit's prompts.
HELDOUT_FRACTION = 0.1
_BUCKETS = 10_000


def read_batches(uris: Sequence[str]) -> pa.Table:
    """The Parquet files (canonical schema: accepted.parquet, released files) as one table."""
    import fsspec
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tunegate.core.schema import CANONICAL_COLUMNS, canonical_schema

    if not uris:
        raise InputError("no batch to train on")
    tables = []
    for uri in uris:
        with fsspec.open(uri, "rb") as f:
            table = pq.read_table(f)
        missing = [c for c in CANONICAL_COLUMNS if c not in table.column_names]
        if missing:
            raise InputError(f"not a canonical-schema batch (lacks {missing})", path=uri)
        tables.append(table.select(list(CANONICAL_COLUMNS)).cast(canonical_schema()))
    return pa.concat_tables(tables)


def heldout_mask(table: pa.Table, *, fraction: float = HELDOUT_FRACTION, seed: int = 0) -> list[bool]:
    """Which rows are held out: a seeded hash of each record's ``content_sha256`` below ``fraction``."""
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"heldout_fraction must be in [0, 1), got {fraction!r}")
    cut = round(fraction * _BUCKETS)
    out = []
    for sha in table.column("content_sha256").to_pylist():
        digest = hashlib.sha256(f"{seed}\0{sha}".encode()).digest()
        out.append(int.from_bytes(digest[:8], "big") % _BUCKETS < cut)
    return out


def train_candidate(batch_uris: Sequence[str], out_dir: str | Path, *, heldout_fraction: float = HELDOUT_FRACTION,
                    seed: int = 0, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train the candidate on ``batch_uris`` minus the held-out share; write the candidate directory (module
    docstring) and return its manifest (``candidate.json``; ``extra`` is recorded in it)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tunegate.core.audit.canary import CanaryModel

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST_FILE).unlink(missing_ok=True)  # a rerun: the old manifest stops vouching for the directory now
    table = read_batches(batch_uris)
    mask = pa.array(heldout_mask(table, fraction=heldout_fraction, seed=seed))
    train = table.filter(pa.compute.invert(mask))
    heldout = table.filter(mask)
    model = CanaryModel.fit(train, seed=seed)
    _replace_dir(out / MODEL_DIR, model.save)
    with atomic_write(out / HELDOUT_FILE) as tmp:
        pq.write_table(heldout, tmp)
    manifest = {
        "model_dir": str((out / MODEL_DIR).resolve()),
        "heldout_uri": (out / HELDOUT_FILE).resolve().as_uri(),
        "batches": list(batch_uris),
        "records": table.num_rows,
        "trained_on": train.num_rows,
        "heldout": heldout.num_rows,
        "heldout_fraction": heldout_fraction,
        "seed": seed,
        "tasks": model.tasks(),
        **(extra or {}),
    }
    write_json_atomic(out / MANIFEST_FILE, manifest)
    log.info("candidate: trained on %d records (%d held out) of %d file(s): %d classification task(s); in %s",
             train.num_rows, heldout.num_rows, len(batch_uris), len(manifest["tasks"]), out)
    return manifest


def _replace_dir(final: Path, write: Any) -> None:
    """Write a directory through a temporary sibling, then swap it in: a reader sees the old or the new one."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    old = final.with_name(f".{final.name}.old")
    try:
        write(tmp)
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
