"""The gate policy: which findings set a record aside, and when the whole batch halts.

Defaults live here; a YAML or JSON file overrides them, and explicit arguments (CLI flags, operator
arguments) override the file. Unknown keys and out-of-range values fail at construction.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunegate.exceptions import ConfigError


@dataclass(frozen=True)
class GatePolicy:
    #: Reasons that quarantine a record. Empty means every reason does (the safe default: a new check's
    #: findings take effect without editing the policy).
    quarantine_reasons: tuple[str, ...] = ()
    #: Reasons that are reported but never quarantine (e.g. while a new check is being trialled).
    ignore_reasons: tuple[str, ...] = ()
    #: Batch-issue severities that halt the batch (GX ``critical`` failures, coordinated attacks).
    halt_severities: tuple[str, ...] = ("critical",)
    #: Batch-issue reason codes that halt whatever their severity.
    halt_reasons: tuple[str, ...] = ()
    #: Halt when more than this fraction of the ingested records is quarantined: something upstream broke.
    max_quarantined_fraction: float = 0.25
    #: Halt when more than this fraction of the input could not be parsed.
    max_rejected_fraction: float = 0.05
    #: Halt when fewer records than this are accepted.
    min_accepted: int = 1
    #: Free-form labels carried into the summary (owner, ticket, ...).
    labels: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("max_quarantined_fraction", "max_rejected_fraction"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
                raise ConfigError(f"policy {name} must be a fraction between 0 and 1, got {value!r}")
        if not isinstance(self.min_accepted, int) or self.min_accepted < 0:
            raise ConfigError(f"policy min_accepted must be a non-negative integer, got {self.min_accepted!r}")
        for name in ("quarantine_reasons", "ignore_reasons", "halt_severities", "halt_reasons"):
            value = getattr(self, name)
            if isinstance(value, str) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"policy {name} must be a list of strings, got {value!r}")
            object.__setattr__(self, name, tuple(value))
        unknown = set(self.halt_severities) - {"critical", "warning", "info"}
        if unknown:
            raise ConfigError(f"policy halt_severities has unknown severities {sorted(unknown)}")

    def quarantines(self, reason: str) -> bool:
        if reason in self.ignore_reasons:
            return False
        return not self.quarantine_reasons or reason in self.quarantine_reasons

    def halts_on(self, severity: str, reason: str) -> bool:
        return severity in self.halt_severities or reason in self.halt_reasons

    def with_overrides(self, **overrides: Any) -> GatePolicy:
        """A copy with the given non-``None`` fields replaced (CLI flags and operator arguments)."""
        overrides = {k: v for k, v in overrides.items() if v is not None}
        _check_keys(overrides, "override")
        return dataclasses.replace(self, **overrides)

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_mapping(cls, data: dict[str, Any], *, source: str = "policy") -> GatePolicy:
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: a policy must be a mapping of settings")
        _check_keys(data, source)
        return cls(**data)

    @classmethod
    def from_file(cls, path: str | Path) -> GatePolicy:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read policy file {p}: {exc.strerror or exc}") from exc
        try:
            if p.suffix in (".yaml", ".yml"):
                import yaml

                data = yaml.safe_load(text) or {}
            else:
                data = json.loads(text)
        except Exception as exc:  # yaml.YAMLError or json.JSONDecodeError
            raise ConfigError(f"policy file {p} does not parse: {exc}") from exc
        return cls.from_mapping(data, source=str(p))


def _check_keys(data: dict[str, Any], source: str) -> None:
    known = {f.name for f in dataclasses.fields(GatePolicy)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{source}: unknown policy settings {unknown}; known: {sorted(known)}")


def load_policy(path: str | Path | None = None, **overrides: Any) -> GatePolicy:
    base = GatePolicy.from_file(path) if path else GatePolicy()
    return base.with_overrides(**overrides)
