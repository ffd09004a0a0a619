"""How inputs are read: the container, the record layout, the column map and the ``DatasetDict`` splits,
as one frozen, validated :class:`InputOptions` that the policy file, the CLI and the operators all build."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from tunegate.exceptions import ConfigError

#: The old single ``fmt`` names (CLI ``--format``, ``IngestOperator(fmt=)``), kept working.
FORMATS = ("auto", "alpaca", "dolly", "sharegpt", "openai", "superni", "parquet", "csv")
CONTAINERS = ("auto", "jsonl", "json", "parquet", "csv", "tsv", "arrow", "hf-disk")
LAYOUTS = ("auto", "alpaca", "dolly", "sharegpt", "openai", "superni", "canonical")
RECORD_FORMATS = ("alpaca", "dolly", "openai", "sharegpt", "canonical")  # layouts that map one object
#: Fields a column map may target: the input fields of the canonical schema.
CANONICAL_FIELDS = ("id", "instruction", "input", "output", "task", "source", "contributor", "messages")
#: Layouts that read canonical field names, so a column map means something to them.
_MAPPABLE_LAYOUTS = ("auto", "alpaca", "canonical", "openai")
_FORMAT_TO_OPTIONS = {
    "auto": ("auto", "auto"),
    "alpaca": ("auto", "alpaca"),
    "dolly": ("auto", "dolly"),
    "sharegpt": ("auto", "sharegpt"),
    "openai": ("auto", "openai"),
    "superni": ("json", "superni"),
    "parquet": ("parquet", "auto"),
    "csv": ("csv", "auto"),
}


@dataclass(frozen=True)
class InputOptions:
    """How to read the inputs: container, record layout, column map and ``DatasetDict`` splits.

    The policy file's ``input:`` section, the CLI and the operators build this same object.
    """

    #: ``auto`` or one of :data:`CONTAINERS`.
    container: str = "auto"
    #: ``auto`` or one of :data:`LAYOUTS`.
    layout: str = "auto"
    #: ``{source column: canonical field}``, e.g. ``{"prompt": "instruction", "completion": "output"}``.
    #: A mapped column replaces a field of the same name; a record without the source column keeps its
    #: own field of that name.
    columns: Mapping[str, str] = field(default_factory=dict)
    #: Splits of a ``DatasetDict`` folder to read; empty means all of them, in the folder's order.
    splits: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.container not in CONTAINERS:
            raise ConfigError(f"input container {self.container!r} is unknown; allowed: {', '.join(CONTAINERS)}")
        if self.layout not in LAYOUTS:
            raise ConfigError(f"input layout {self.layout!r} is unknown; allowed: {', '.join(LAYOUTS)}")
        if self.layout == "superni" and self.container not in ("auto", "json"):
            raise ConfigError(f"input layout 'superni' reads Super-NaturalInstructions task files, a 'json' "
                              f"container, not {self.container!r}")
        if not isinstance(self.columns, Mapping):
            raise ConfigError(f"input columns must be a mapping of source column to canonical field, "
                              f"got {self.columns!r}")
        targets: dict[str, str] = {}
        for src, dst in self.columns.items():
            if not isinstance(src, str) or not src:
                raise ConfigError(f"input columns: source column {src!r} must be a non-empty string")
            if dst not in CANONICAL_FIELDS:
                raise ConfigError(f"input columns: {src!r} maps onto {dst!r}, which is not a canonical field; "
                                  f"allowed: {', '.join(CANONICAL_FIELDS)}")
            if dst in targets:
                raise ConfigError(f"input columns: {targets[dst]!r} and {src!r} both map onto {dst!r}")
            targets[dst] = src
        if self.columns and self.layout not in _MAPPABLE_LAYOUTS:
            raise ConfigError(f"input columns rename onto canonical fields, which layout {self.layout!r} does "
                              f"not read; use layout {', '.join(repr(x) for x in _MAPPABLE_LAYOUTS)}")
        object.__setattr__(self, "columns", MappingProxyType(dict(self.columns)))
        splits = self.splits
        if isinstance(splits, str) or not isinstance(splits, Sequence) or not all(
                isinstance(x, str) and x for x in splits):
            raise ConfigError(f"input splits must be a list of split names, got {splits!r}")
        object.__setattr__(self, "splits", tuple(splits))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str | None = None) -> InputOptions:
        """Build from a policy file's ``input:`` section (or any mapping); errors name ``source``.

        ``columns`` may be a mapping or a list of ``"SRC=DST"`` strings (the CLI's ``--column``).
        """
        where = f"{source}: " if source else ""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}the input section must be a mapping, got {type(data).__name__}")
        known = [f for f in cls.__dataclass_fields__]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError(f"{where}unknown input settings {unknown}; allowed: {known}")
        values = {k: v for k, v in data.items() if v is not None}  # an empty YAML key means the default
        if "columns" in values and not isinstance(values["columns"], Mapping):
            values["columns"] = parse_columns(values["columns"], source=source)
        try:
            return cls(**values)
        except ConfigError as exc:
            raise ConfigError(f"{where}{exc}") from None

    @classmethod
    def from_format(cls, fmt: str) -> InputOptions:
        """The options an old ``fmt`` name stands for (``superni`` -> json container + superni layout)."""
        if fmt not in _FORMAT_TO_OPTIONS:
            raise ConfigError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
        container, layout = _FORMAT_TO_OPTIONS[fmt]
        return cls(container=container, layout=layout)

    def to_json(self) -> dict[str, Any]:
        return {"container": self.container, "layout": self.layout, "columns": dict(self.columns),
                "splits": list(self.splits)}


def parse_columns(specs: Any, *, source: str | None = None) -> dict[str, str]:
    """``["prompt=instruction", ...]`` -> ``{"prompt": "instruction", ...}``; a bad entry is a ConfigError."""
    where = f"{source}: " if source else ""
    if isinstance(specs, str) or not isinstance(specs, Sequence):
        raise ConfigError(f"{where}input columns must be a mapping or a list of 'SRC=DST' strings, got {specs!r}")
    out: dict[str, str] = {}
    for spec in specs:
        src, sep, dst = spec.partition("=") if isinstance(spec, str) else ("", "", "")
        if not sep or not src.strip() or not dst.strip():
            raise ConfigError(f"{where}input column map {spec!r} is not 'SRC=DST' (e.g. 'prompt=instruction')")
        if src.strip() in out:
            raise ConfigError(f"{where}input column {src.strip()!r} is mapped twice")
        out[src.strip()] = dst.strip()
    return out


def resolve_options(fmt: str, options: InputOptions | None) -> InputOptions:
    """``options``, or the options the old ``fmt`` name stands for; passing both is a ConfigError."""
    if options is None:
        return InputOptions.from_format(fmt)
    if fmt != "auto":
        raise ConfigError(f"pass either fmt={fmt!r} or options, not both")
    return options
