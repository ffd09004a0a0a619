"""The policy: which checks run with which options, which findings set a record aside, when a batch halts.

One configuration surface for the CLI and the Airflow DAG. Defaults live here; a YAML or JSON file
overrides them, and explicit arguments (CLI flags, operator arguments) override the file. Unknown keys,
unknown check names or options, unknown reason codes and out-of-range values fail at load, with a
message that names the key and lists what is allowed.

A policy file, every key optional::

    max_quarantined_fraction: 0.25      # gate settings (see GatePolicy's fields)
    ignore_reasons: [embedding_outlier, gx_mojibake]   # reason codes: docs/reasons.md
    checks:                              # default: every check on, with its documented defaults
      near_duplicate: {threshold: 0.97}  # options of one check
      embedding_outlier: false           # opting out is explicit
    suites: [instruction_record, instruction_quality]   # Great Expectations suites ([] for none)
    input:                               # how inputs are read (see tunegate.core.readers.InputOptions)
      layout: alpaca
      columns: {prompt: instruction, completion: output}

Great Expectations codes are the configured suites' ``meta.reason`` codes. The legacy name
``gx_<expectation type>`` is still accepted in the reason lists and stands for every expectation of that type
(:func:`tunegate.core.reasons.gx_aliases`), so policies written before the specific codes keep their meaning.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunegate.core.reasons import SEVERITIES, GxReason, gx_aliases, known_reasons
from tunegate.exceptions import ConfigError

#: Checks every run gets unless the policy turns them off, in the order they run (``contributor_policy`` reads the
#: poison scans' findings, so it comes after them).
DEFAULT_CHECKS: tuple[str, ...] = ("record_size", "exact_duplicate", "near_duplicate", "embedding_outlier",
                                   "poison_trigger", "poison_content", "contributor_policy", "source_diversity")
#: Great Expectations suites every run validates unless the policy says otherwise.
DEFAULT_SUITES: tuple[str, ...] = ("instruction_record", "instruction_quality")
#: Check options a run sets, not a policy: where the history lives and which batch this is.
RUN_OPTIONS: dict[str, str] = {
    "history_dir": "the history location is set per run (`tunegate scan --history DIR`, DAG param `history_dir`)",
    "batch_id": "the batch id is set per run (`tunegate scan --batch-id`, the DAG's logical date)",
}
_REASON_LISTS = ("quarantine_reasons", "ignore_reasons", "halt_reasons")


def _default_checks() -> dict[str, Any]:
    return {name: {} for name in DEFAULT_CHECKS}


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
    #: Which checks run and their options: ``{name: {option: value}}`` for a check that runs, ``False`` for
    #: one turned off. Given as a mapping, checks it does not name keep their defaults (on); given as a
    #: list of names, exactly those run. Normalized to every registered check, in run order.
    checks: Mapping[str, Any] = field(default_factory=_default_checks)
    #: Great Expectations suites (names under ``expectations/`` or paths to suite JSON files).
    suites: tuple[str, ...] = DEFAULT_SUITES
    #: How inputs are read: container, record layout, column map, splits (``InputOptions`` as a mapping).
    input: Mapping[str, Any] = field(default_factory=dict)
    #: The canary audit before the night commits (docs/audit.md): ``{option: value}`` of
    #: :class:`tunegate.core.audit.config.CanaryConfig`, ``false`` to turn it off. On by default; a failing
    #: audit warns (``canary_flip``), and halts when ``halt_reasons`` lists ``canary_flip``.
    canary: Any = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("max_quarantined_fraction", "max_rejected_fraction"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
                raise ConfigError(f"policy {name} must be a fraction between 0 and 1, got {value!r}")
        if isinstance(self.min_accepted, bool) or not isinstance(self.min_accepted, int) or self.min_accepted < 0:
            raise ConfigError(f"policy min_accepted must be a non-negative integer, got {self.min_accepted!r}")
        for name in (*_REASON_LISTS, "halt_severities", "suites"):
            value = getattr(self, name)
            if isinstance(value, str) or not isinstance(value, Sequence) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"policy {name} must be a list of strings, got {value!r}")
            object.__setattr__(self, name, tuple(value))
        if not isinstance(self.labels, Mapping):
            raise ConfigError(f"policy labels must be a mapping of strings, got {self.labels!r}")
        unknown = sorted(set(self.halt_severities) - set(SEVERITIES))
        if unknown:
            raise ConfigError(f"policy halt_severities has unknown severities {unknown}; allowed: {list(SEVERITIES)}")
        object.__setattr__(self, "checks", normalize_checks(self.checks))
        object.__setattr__(self, "input", self.input_options().to_json() if self.input else {})
        object.__setattr__(self, "canary", self.canary_config().to_json())
        gx = suite_reasons(self.suites)
        known = known_reasons(gx)
        aliases = gx_aliases(gx)
        for name in _REASON_LISTS:
            bad = sorted(set(getattr(self, name)) - known)
            if bad:
                raise ConfigError(f"policy {name} names unknown reason codes {bad}; known: {', '.join(sorted(known))}")
            # a legacy alias gx_<expectation type> stands for the codes of every expectation of that type
            codes = {c for r in getattr(self, name) for c in aliases.get(r, {r})}
            object.__setattr__(self, f"_{name}", frozenset(codes))

    # ---------------------------------------------------------------------------------------------

    def quarantines(self, reason: str) -> bool:
        if reason in self._codes("ignore_reasons"):
            return False
        return not self.quarantine_reasons or reason in self._codes("quarantine_reasons")

    def halts_on(self, severity: str, reason: str) -> bool:
        return severity in self.halt_severities or reason in self._codes("halt_reasons")

    def _codes(self, name: str) -> frozenset[str]:
        """A reason list with its legacy aliases expanded (computed at load; the field keeps what was written)."""
        codes: frozenset[str] = self.__dict__[f"_{name}"]
        return codes

    def enabled_checks(self) -> list[tuple[str, dict[str, Any]]]:
        """``(name, options)`` of the checks that run, in run order."""
        return [(name, dict(opts)) for name, opts in self.checks.items() if opts is not False]

    def input_options(self) -> Any:
        """The ``input`` section as :class:`tunegate.core.readers.InputOptions` (validated)."""
        from tunegate.core.readers import InputOptions

        if isinstance(self.input, InputOptions):
            return self.input
        if not isinstance(self.input, Mapping):
            raise ConfigError(f"policy input must be a mapping of input settings, got {self.input!r}")
        return InputOptions.from_mapping(self.input, source="input")

    def canary_config(self) -> Any:
        """The ``canary`` section as :class:`tunegate.core.audit.config.CanaryConfig` (validated)."""
        from tunegate.core.audit.config import CanaryConfig

        if isinstance(self.canary, bool):
            return CanaryConfig(enabled=self.canary)
        if not isinstance(self.canary, Mapping):
            raise ConfigError(f"policy canary must be false, true or a mapping of canary settings, got {self.canary!r}")
        try:
            return CanaryConfig.from_mapping(self.canary)
        except ConfigError as exc:
            raise ConfigError(f"policy {exc}") from None

    def disabled_checks(self) -> list[str]:
        return [name for name, opts in self.checks.items() if opts is False]

    def with_overrides(self, **overrides: Any) -> GatePolicy:
        """A copy with the given non-``None`` fields replaced (CLI flags and operator arguments).

        ``checks`` given as a mapping is merged into the current checks (``{"near_duplicate": {"k": 20}}``
        changes one option, ``{"embedding_outlier": False}`` turns one check off); as a list it replaces them.
        """
        overrides = {k: v for k, v in overrides.items() if v is not None}
        _check_keys(overrides, "override")
        if isinstance(overrides.get("checks"), Mapping):
            overrides["checks"] = merge_checks(self.checks, overrides["checks"])
        return dataclasses.replace(self, **overrides)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, Mapping):
                value = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in value.items()}
            out[f.name] = value
        return out

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str | None = None) -> GatePolicy:
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source or 'policy'}: a policy must be a mapping of settings")
        _check_keys(data, source or "policy")
        try:
            return cls(**data)
        except ConfigError as exc:
            if source is None:
                raise
            raise ConfigError(f"{source}: {exc}") from None

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


def _check_keys(data: Mapping[str, Any], source: str) -> None:
    known = {f.name for f in dataclasses.fields(GatePolicy)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{source}: unknown policy settings {unknown}; known: {sorted(known)}")


def load_policy(path: str | Path | None = None, **overrides: Any) -> GatePolicy:
    base = GatePolicy.from_file(path) if path else GatePolicy()
    return base.with_overrides(**overrides)


# -------------------------------------------------------------------------------------------------
# the checks section


def configurable_checks() -> tuple[str, ...]:
    """Names a policy's ``checks`` section accepts: every registered check except the GX one (``suites``)."""
    from tunegate.core.checks import REGISTRY

    ordered = [n for n in DEFAULT_CHECKS if n in REGISTRY]
    return (*ordered, *sorted(n for n in REGISTRY if n not in ordered and n != "gx_suite"))


def in_run_order(by_check: Mapping[str, Any]) -> dict[str, Any]:
    """``by_check`` (keyed by check name) in the order the checks run, then the others (GX suites) by name."""
    order = {name: i for i, name in enumerate(configurable_checks())}
    return dict(sorted(by_check.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))


def check_options(name: str) -> dict[str, Any]:
    """The options a check accepts and their defaults: the fields of its ``config_class``
    (:class:`tunegate.core.checks.config.CheckConfig`; every check declares one)."""
    from tunegate.core.checks import check_class

    return dict(check_class(name).config_class.options())


def normalize_checks(spec: Any) -> dict[str, Any]:
    """Validate a ``checks`` setting and return ``{name: options | False}`` for every configurable check."""
    names = configurable_checks()
    if isinstance(spec, Mapping):
        merged = merge_checks(_default_checks_all(names), spec)
    elif isinstance(spec, Sequence) and not isinstance(spec, str):
        if not all(isinstance(n, str) for n in spec):
            raise ConfigError(f"checks: a list of check names expected, got {list(spec)!r}")
        _known_names(spec, names)
        merged = {n: ({} if n in spec else False) for n in names}
    else:
        raise ConfigError(f"checks must be a mapping {{check: options or false}} or a list of check names, "
                          f"got {spec!r}; checks: {', '.join(names)}")
    for name, opts in merged.items():
        if opts is not False:
            _validate_options(name, opts)
    return merged


def _default_checks_all(names: Sequence[str]) -> dict[str, Any]:
    return {n: ({} if n in DEFAULT_CHECKS else False) for n in names}


def merge_checks(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` applied: ``false`` turns a check off, ``true``/``null``/``{}`` turns it on with
    its options, a mapping sets options (``enabled: false`` inside it turns the check off)."""
    names = configurable_checks()
    _known_names(list(changes), names)
    out = {n: base.get(n, {} if n in DEFAULT_CHECKS else False) for n in names}
    for name, value in changes.items():
        if value is False:
            out[name] = False
        elif value is True or value is None:
            out[name] = dict(out[name]) if isinstance(out[name], Mapping) else {}
        elif isinstance(value, Mapping):
            opts = dict(value)
            enabled = opts.pop("enabled", True)
            if not isinstance(enabled, bool):
                raise ConfigError(f"checks.{name}.enabled must be true or false, got {enabled!r}")
            previous = out[name] if isinstance(out[name], Mapping) else {}
            out[name] = {**previous, **opts} if enabled else False
        else:
            raise ConfigError(f"checks.{name}: expected true, false or a mapping of options, got {value!r}")
    return out


def _known_names(given: Sequence[str], names: Sequence[str]) -> None:
    unknown = [n for n in given if n not in names]
    if unknown:
        hint = " (Great Expectations suites go under `suites:`)" if "gx_suite" in unknown else ""
        raise ConfigError(f"checks: unknown check(s) {unknown}{hint}; known: {', '.join(names)}")


def _validate_options(name: str, options: Mapping[str, Any]) -> None:
    from tunegate.core.checks import build_check

    allowed = check_options(name)
    for key in options:
        if key in RUN_OPTIONS:
            raise ConfigError(f"checks.{name}.{key} cannot be set in a policy: {RUN_OPTIONS[key]}")
        if key not in allowed:
            listed = ", ".join(f"{k} (default {v!r})" for k, v in allowed.items() if k not in RUN_OPTIONS)
            raise ConfigError(f"checks.{name}: unknown option {key!r}; "
                              + (f"allowed: {listed}" if listed else "this check takes no options"))
    try:
        build_check(name, **options)  # the check validates values: what it rejects, the policy rejects
    except ConfigError as exc:
        raise ConfigError(f"checks.{name}: {exc}") from None


def suite_reasons(suites: Sequence[str]) -> list[GxReason]:
    """The reason code of every expectation of the suites (read from their JSON; GX is not imported)."""
    from tunegate.core.checks.gx_load import suite_reasons as reasons_of

    return [r for suite in suites for r in reasons_of(suite)]
