"""Great Expectations suites as *recipes*: find a suite by name or path, build it with a clear error, quiet GX.

Nothing here runs at DAG parse time: the check calls these when it runs (``load_suite`` imports GX).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from tunegate.core.reasons import GxReason, expectation_reason, gx_code_problem
from tunegate.exceptions import ConfigError

_PACKAGE_SUITES = Path(__file__).resolve().parents[2] / "expectations"  # installed wheel
_SOURCE_SUITES = Path(__file__).resolve().parents[4] / "expectations"  # source checkout


def resolve_suite(suite: str | Path) -> Path:
    """A suite name (``instruction_record``) or a path to a suite JSON file."""
    candidate = Path(suite)
    if candidate.suffix == ".json" or candidate.exists():
        if not candidate.is_file():
            raise ConfigError(f"suite file {candidate} does not exist")
        return candidate
    for folder in (_PACKAGE_SUITES, _SOURCE_SUITES):
        path = folder / f"{suite}.json"
        if path.is_file():
            return path
    known = sorted({p.stem for d in (_PACKAGE_SUITES, _SOURCE_SUITES) if d.is_dir() for p in d.glob("*.json")})
    raise ConfigError(f"unknown expectation suite {suite!r}; known suites: {', '.join(known) or 'none'}")


def quiet_gx() -> None:
    """GX logs every registration at INFO under Airflow's structlog setup; keep only warnings."""
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    for name in ("great_expectations._docs_decorators", "great_expectations.data_context.types.base"):
        logging.getLogger(name).setLevel(logging.WARNING)


def expectation_severity(expectation: Any) -> str:
    value = getattr(expectation, "severity", "critical")
    return str(getattr(value, "value", value)).lower()


def read_suite(path: Path) -> dict[str, Any]:
    """The suite file as JSON (Great Expectations is not imported); a clear :class:`ConfigError` when it is not
    a suite."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read suite file {path}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"suite file {path} is not valid JSON: {exc.msg} at line {exc.lineno}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("expectations"), list):
        raise ConfigError(f"suite file {path} must be an object with an 'expectations' list")
    data.setdefault("name", path.stem)
    return data


def suite_reasons_of(data: dict[str, Any], path: Path) -> list[GxReason]:
    """The reason code of every expectation of a parsed suite, in suite order; a :class:`ConfigError` names the
    expectation whose ``meta.reason`` is not a valid code."""
    out: list[GxReason] = []
    for i, exp in enumerate(data["expectations"]):
        if not isinstance(exp, dict) or not isinstance(exp.get("type"), str):
            raise ConfigError(f"suite file {path}: expectation #{i + 1} has no 'type'")
        meta = exp.get("meta") or {}
        if not isinstance(meta, dict):
            raise ConfigError(f"suite file {path}: expectation #{i + 1} ({exp['type']}): meta must be an object")
        if "reason" in meta and (problem := gx_code_problem(meta["reason"])):
            raise ConfigError(f"suite file {path}: expectation #{i + 1} ({exp['type']}): {problem}")
        kwargs = exp["kwargs"] if isinstance(exp.get("kwargs"), dict) else {}
        column = kwargs.get("column") or kwargs.get("column_B")
        out.append(GxReason(code=expectation_reason(meta, exp["type"]), expectation_type=exp["type"],
                            severity=str(exp.get("severity") or "critical").lower(),
                            column=str(column) if column else None, why=meta.get("why")))
    return out


def suite_reasons(suite: str | Path) -> list[GxReason]:
    """The reason codes of a suite given by name or path (read from its JSON; GX is not imported)."""
    path = resolve_suite(suite)
    return suite_reasons_of(read_suite(path), path)


def load_suite(path: Path) -> Any:
    """Parse and build the suite; a clear :class:`ConfigError` names the file and the bad expectation."""
    data = read_suite(path)
    suite_reasons_of(data, path)  # a bad meta.reason fails here, before any data is read
    quiet_gx()
    import great_expectations as gx
    from great_expectations.expectations.registry import get_expectation_impl

    import tunegate.core.gx_expectations  # noqa: F401  (registers tunegate's custom expectations)

    for i, exp in enumerate(data["expectations"]):
        etype = exp.get("type") if isinstance(exp, dict) else None
        try:
            get_expectation_impl(str(etype))
        except Exception as exc:  # GX raises its own ExpectationNotFoundError
            raise ConfigError(f"suite file {path}: expectation #{i + 1} has unknown type {etype!r}") from exc
    try:
        return gx.ExpectationSuite(**data)
    except Exception as exc:
        raise ConfigError(f"suite file {path} is not a valid GX suite: {exc}") from exc
