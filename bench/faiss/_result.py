"""What every benchmark script under bench/faiss does last: print its result as one JSON line, and keep it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def emit(result: dict[str, Any], out: Path | None) -> int:
    """Print ``result`` as one sorted JSON line (and write it to ``out`` when given); the exit code 0."""
    line = json.dumps(result, sort_keys=True)
    print(line)
    if out:
        out.write_text(line + "\n", encoding="utf-8")
    return 0
