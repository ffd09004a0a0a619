"""One pattern for every check's options: a frozen, validated dataclass (as ``GatePolicy`` is).

A check declares ``config_class``, a :class:`CheckConfig` subclass whose fields, all with defaults, *are* its
options. The policy file's ``checks:`` section, the CLI's ``--option`` and the operators build the same
object through :meth:`CheckConfig.from_mapping`, so an unknown option or a bad value fails the same way
everywhere, naming the check and the key and listing what is allowed::

    @dataclass(frozen=True)
    class NearDuplicateConfig(EmbeddingConfig):
        threshold: float | None = None
        k: int = 10

        def __post_init__(self) -> None:
            super().__post_init__()
            integer(self, "k", minimum=1, maximum=1000)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from tunegate.exceptions import ConfigError

C = TypeVar("C", bound="CheckConfig")


@dataclass(frozen=True)
class CheckConfig:
    """Base of the check option dataclasses. ``check`` names the check in error messages."""

    check: ClassVar[str] = "check"

    @classmethod
    def options(cls) -> dict[str, Any]:
        """Option name -> default: the check's own options first, then those it shares with its kind."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        order = [name for klass in cls.__mro__ for name in vars(klass).get("__annotations__", {}) if name in fields]
        out: dict[str, Any] = {}
        for f in (fields[name] for name in dict.fromkeys(order)):
            if f.default is not dataclasses.MISSING:
                out[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                out[f.name] = f.default_factory()
            else:
                out[f.name] = None
        return out

    @classmethod
    def from_mapping(cls: type[C], data: Mapping[str, Any]) -> C:
        """Build from options given by name; unknown names fail listing the allowed ones with defaults."""
        allowed = cls.options()
        unknown = [k for k in data if k not in allowed]
        if unknown:
            listed = ", ".join(f"{k} (default {v!r})" for k, v in allowed.items())
            raise ConfigError(f"{cls.check}: unknown option {unknown[0]!r}; "
                              + (f"allowed: {listed}" if listed else "this check takes no options"))
        return cls(**data)

    def to_json(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


# --------------------------------------------------------------------------------------------------
# validators: each raises ConfigError("<check> <name> must be ..., got <value>")


def _fail(config: CheckConfig, name: str, what: str) -> ConfigError:
    return ConfigError(f"{config.check} {name} must be {what}, got {getattr(config, name)!r}")


def integer(config: CheckConfig, name: str, *, minimum: int | None = None, maximum: int | None = None) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum) or (
            maximum is not None and value > maximum):
        bounds = (f"between {minimum} and {maximum}" if minimum is not None and maximum is not None
                  else f">= {minimum}" if minimum is not None else f"<= {maximum}" if maximum is not None else "")
        raise _fail(config, name, f"an integer {bounds}".strip())


def number(config: CheckConfig, name: str, *, low: float | None = None, high: float | None = None,
           low_open: bool = False, high_open: bool = False) -> None:
    """A real number in the interval given (``low_open``/``high_open`` exclude that end)."""
    value = getattr(config, name)
    ok = not isinstance(value, bool) and isinstance(value, (int, float))
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        span = f" in {left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"
        raise _fail(config, name, f"a number{span}")
    object.__setattr__(config, name, float(value))


def fraction(config: CheckConfig, name: str, *, allow_zero: bool = False) -> None:
    """A share: (0, 1], or [0, 1] with ``allow_zero``."""
    number(config, name, low=0.0, high=1.0, low_open=not allow_zero)


def boolean(config: CheckConfig, name: str) -> None:
    if not isinstance(getattr(config, name), bool):
        raise _fail(config, name, "true or false")


def choice(config: CheckConfig, name: str, choices: Sequence[Any]) -> None:
    if getattr(config, name) not in choices:
        raise _fail(config, name, f"one of {', '.join(map(str, choices))}")


def optional_path(config: CheckConfig, name: str) -> None:
    from pathlib import Path

    value = getattr(config, name)
    if value is not None and not isinstance(value, (str, Path)):
        raise _fail(config, name, "a path")


def strings(config: CheckConfig, name: str) -> None:
    """A list of strings (names, task ids); stored as a tuple."""
    value = getattr(config, name)
    if isinstance(value, str) or not isinstance(value, Sequence) or not all(isinstance(v, str) and v for v in value):
        raise _fail(config, name, "a list of non-empty strings")
    object.__setattr__(config, name, tuple(value))
