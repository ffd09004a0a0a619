"""tunegate: a data gate between an instruction-tuning corpus and the fine-tuning job.

Importing this package is cheap: heavy libraries (pyarrow, great_expectations, faiss, pandas)
are imported by the modules that need them, never here.
"""

from __future__ import annotations

__version__ = "0.2.0"

__all__ = ["__version__"]
