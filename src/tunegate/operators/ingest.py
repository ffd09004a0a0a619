"""``IngestOperator``: read the night's input into the run's work directory."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from typing import Any

from tunegate.operators._compat import Context
from tunegate.operators.base import TunegateBaseOperator, fail_on_tunegate_error


class IngestOperator(TunegateBaseOperator):
    """Read ``inputs`` (paths, directories, globs or fsspec URLs) into ``WORK/canonical.parquet``.

    Records that cannot be parsed go to ``WORK/rejected.jsonl``; nothing is lost. The work directory is
    emptied first, so a rerun of the night starts clean (stale findings of an earlier try cannot leak in).

    :param inputs: one input or a list of inputs (templated).
    :param fmt: ``auto`` or one of the formats of :mod:`tunegate.core.readers` (templated).
    :param batch_size: records held in memory at a time.
    :param run_dir: overrides ``{TUNEGATE_DATA_ROOT}/{dag_id}/{logical date}`` (templated).
    """

    template_fields: Sequence[str] = ("inputs", "fmt", "run_dir")

    def __init__(self, *, inputs: str | Sequence[str], fmt: str = "auto", batch_size: int = 10_000,
                 run_dir: str | None = None, **kwargs: Any) -> None:
        super().__init__(run_dir=run_dir, **kwargs)
        self.inputs = inputs
        self.fmt = fmt
        self.batch_size = batch_size

    def execute(self, context: Context) -> dict[str, Any]:
        from tunegate.core.ingest import ingest

        work = self.resolve_work_dir(context)
        inputs = [self.inputs] if isinstance(self.inputs, str) else list(self.inputs)
        if work.exists():
            shutil.rmtree(work)
        with fail_on_tunegate_error():
            result = ingest(inputs, work, fmt=self.fmt, batch_size=self.batch_size)
        self.log.info("ingest: %d files -> %d records, %d rejected, into %s", len(result.inputs), result.records,
                      result.rejected, work)
        return {"work_dir": str(work), "files": len(result.inputs), "records": result.records,
                "rejected": result.rejected, "total": result.total}
