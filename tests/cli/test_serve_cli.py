"""``tunegate serve-model``: a saved canary (trained on a real task of the bundled slice) answers over HTTP."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pyarrow as pa
import pytest

from tests.conftest import slice_records

TASK = "task363_sst2_polarity_classification"


@pytest.mark.slow  # a fresh interpreter serving a model: seconds
def test_serve_model_answers_chat_completions_until_stopped(tmp_path: Path) -> None:
    from tunegate.core.audit.canary import CanaryModel

    records = [r for r in slice_records() if r["task"] == TASK]
    table = pa.table({c: [r.get(c) or "" for r in records] for c in ("instruction", "input", "output", "task")}
                     | {"source": ["superni"] * len(records)})
    CanaryModel.fit(table).save(tmp_path / "model")
    proc = subprocess.Popen([sys.executable, "-m", "tunegate.cli", "serve-model", str(tmp_path / "model"),
                             "--port", "0", "--name", "sst2-canary"], stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "as 'sst2-canary' (1 tasks)" in line, line
        url = line.rsplit(" at ", 1)[1].strip()
        r = records[0]
        reply = httpx.post(url, timeout=10, json={
            "model": "sst2-canary",  # one task: metadata.task may be left out
            "messages": [{"role": "system", "content": r["instruction"]}, {"role": "user", "content": r["input"]}]})
        assert reply.status_code == 200
        assert reply.json()["choices"][0]["message"]["content"] in {"POS", "NEG"}
    finally:
        proc.terminate()
        proc.wait(timeout=10)
