from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

DATA = Path(__file__).parent / "data"
FORMATS = DATA / "formats"
REPO = Path(__file__).resolve().parents[1]
NIGHTLY = REPO / "samples" / "nightly" / "batch.jsonl"


def slice_records() -> list[dict[str, Any]]:
    with gzip.open(DATA / "superni_slice.jsonl.gz", "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def superni_slice() -> list[dict[str, Any]]:
    return slice_records()


@pytest.fixture(scope="session")
def gx_check() -> Any:
    """The default suite check, built once: importing great_expectations costs seconds."""
    from tunegate.core.checks import build_check

    return build_check("gx_suite", suite="instruction_record")


@pytest.fixture(scope="session")
def gx_quality() -> Any:
    from tunegate.core.checks import build_check

    return build_check("gx_suite", suite="instruction_quality")
