"""The hashing embedder and the embedding cache, on records of the bundled slice."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.core.test_near_duplicate import make_batch
from tunegate.core.embeddings import EmbeddingCache, EmbeddingSpec, build_embedder, embed_table, parse_fields
from tunegate.exceptions import ConfigError

FIELDS = ("instruction", "input", "output")


def columns(records: list[dict[str, Any]]) -> dict[str, list[str]]:
    return {f: [r[f] for r in records] for f in FIELDS}


def test_a_vector_depends_on_the_record_alone(superni_slice: list[dict[str, Any]]) -> None:
    emb = build_embedder(EmbeddingSpec())
    some = superni_slice[:300]
    alone = emb.embed(columns(some[100:101]))
    among = emb.embed(columns(some))
    assert alone.dtype == np.float32 and alone.shape == (1, 256)
    np.testing.assert_array_equal(alone[0], among[100])  # bit for bit: cached and fresh vectors agree
    np.testing.assert_allclose(np.linalg.norm(among, axis=1), 1.0, rtol=1e-5)


def test_cosine_is_the_mean_of_the_field_cosines(superni_slice: list[dict[str, Any]]) -> None:
    recs = superni_slice[::9][:400]
    a, b = recs[::2], recs[1::2]  # 200 pairs, many of the same task (same definition)
    whole_a, whole_b = (build_embedder(EmbeddingSpec()).embed(columns(x)) for x in (a, b))
    whole = np.einsum("ij,ij->i", whole_a, whole_b)
    per_field = []
    for f in FIELDS:
        emb = build_embedder(EmbeddingSpec(fields=(f,)))
        per_field.append(np.einsum("ij,ij->i", emb.embed(columns(a)), emb.embed(columns(b))))
    mean = np.mean(per_field, axis=0)
    # the count sketch adds noise of about 1/sqrt(dim) to far pairs; near pairs are where it is exact enough
    assert float(np.abs(whole - mean).mean()) < 0.05
    assert float(np.corrcoef(whole, mean)[0, 1]) > 0.9


def test_case_and_spacing_do_not_matter_and_empty_fields_match(superni_slice: list[dict[str, Any]]) -> None:
    rec = next(r for r in superni_slice if len(r["input"]) > 80)
    shouted = dict(rec, input="  ".join(rec["input"].upper().split()))
    no_input = [dict(rec, input=""), dict(rec, input="")]
    v = build_embedder(EmbeddingSpec()).embed(columns([rec, shouted, *no_input]))
    assert float(v[0] @ v[1]) == pytest.approx(1.0, abs=1e-6)
    assert float(v[2] @ v[3]) == pytest.approx(1.0, abs=1e-6)
    assert float(v[0] @ v[2]) < 0.8


def test_the_cache_returns_what_was_computed(tmp_path: Path, superni_slice: list[dict[str, Any]]) -> None:
    batch = make_batch(tmp_path, "b", superni_slice[:500])
    spec = EmbeddingSpec()
    fresh = embed_table(batch, spec)
    cached_once = embed_table(batch, spec, cache_dir=tmp_path / "cache")
    cached_twice = embed_table(batch, spec, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(fresh, cached_once)
    np.testing.assert_array_equal(fresh, cached_twice)
    digests = batch.read_columns(["content_sha256"]).column(0).to_pylist()
    found, vectors = EmbeddingCache(tmp_path / "cache", spec).get([digests[3], "0" * 64])
    assert found.tolist() == [True, False]
    np.testing.assert_array_equal(vectors[0], fresh[3])
    # another configuration has its own folder: vectors never mix
    assert not EmbeddingCache(tmp_path / "cache", EmbeddingSpec(fields=("output",))).get(digests[:1])[0].any()


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_a_table_embedded_in_threads_is_the_table_embedded_record_by_record(
        tmp_path: Path, superni_slice: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch, threads: int) -> None:
    from tunegate.core.embeddings import table

    records = superni_slice[:700] + superni_slice[100:160]  # exact copies in later read batches
    batch = make_batch(tmp_path, "b", records)
    monkeypatch.setattr(table, "_READ_BATCH", 97)  # many read batches in flight
    monkeypatch.setattr(table, "usable_cores", lambda: threads)
    spec = EmbeddingSpec()
    one_by_one = build_embedder(spec).embed(columns(batch.read_columns(list(FIELDS)).to_pylist()))
    np.testing.assert_array_equal(embed_table(batch, spec), one_by_one)
    half = make_batch(tmp_path, "half", records[::2])
    embed_table(half, spec, cache_dir=tmp_path / "cache")  # half of them cached, in stored order
    np.testing.assert_array_equal(embed_table(batch, spec, cache_dir=tmp_path / "cache"), one_by_one)
    np.testing.assert_array_equal(embed_table(batch, spec, cache_dir=tmp_path / "cache"), one_by_one)


def test_cache_parts_are_merged(tmp_path: Path, superni_slice: list[dict[str, Any]]) -> None:
    spec = EmbeddingSpec()
    cache = EmbeddingCache(tmp_path, spec)
    emb = build_embedder(spec)
    recs = superni_slice[:40]
    vecs = emb.embed(columns(recs))
    digests = [f"{i:064x}" for i in range(len(recs))]
    for i in range(0, 40, 2):
        cache.put(digests[i:i + 2], vecs[i:i + 2])
    assert len(list(cache.dir.glob("part-*.keys.npy"))) <= 16
    found, got = cache.get(digests)
    assert found.all()
    np.testing.assert_array_equal(got, vecs)


def test_merging_parts_keeps_each_key_once_with_its_first_vector(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                 ) -> None:
    from tunegate.core.embeddings import cache as cache_module

    monkeypatch.setattr(cache_module, "_MERGE_ROWS", 7)  # many blocks, each drawing on several parts
    spec = EmbeddingSpec()
    rng = np.random.default_rng(0)
    caches = [EmbeddingCache(tmp_path / f"c{i}", spec) for i in range(2)]
    want: dict[str, np.ndarray] = {}
    for i in range(12):  # keys repeat across parts and caches; the first part written (in order) wins
        digests = [f"{int(k):064x}" for k in rng.choice(60, size=9, replace=False)]
        vecs = rng.standard_normal((9, 256)).astype(np.float32)
        caches[i % 2].put(digests, vecs)
        for d, v in zip(digests, vecs, strict=True):
            want.setdefault((i % 2, d), v)  # per cache
    target = EmbeddingCache(tmp_path / "target", spec)
    gathered = cache_module.gather(caches, target, name="shards")
    first_source = {d: v for (c, d), v in sorted(want.items(), key=lambda kv: kv[0][0], reverse=True)}
    assert gathered == len(first_source)
    keys = sorted(first_source)
    found, got = target.get(keys)
    assert found.all() and len(list(target.dir.glob("part-*.keys.npy"))) == 1
    np.testing.assert_array_equal(got, np.stack([first_source[k] for k in keys]))
    caches[0].compact()  # one cache's parts, merged in place
    assert len(list(caches[0].dir.glob("part-*.keys.npy"))) == 1
    mine = sorted(d for c, d in want if c == 0)
    found, got = caches[0].get(mine)
    assert found.all()
    np.testing.assert_array_equal(got, np.stack([want[(0, d)] for d in mine]))


def test_fields_and_backends_are_validated() -> None:
    assert parse_fields("prompt") == ("instruction", "input")
    assert parse_fields("output+instruction") == ("instruction", "output")
    with pytest.raises(ConfigError, match="embedding fields"):
        EmbeddingSpec(fields="answer")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="dim"):
        EmbeddingSpec(dim=3)
    assert EmbeddingSpec(fields="all").fingerprint() == EmbeddingSpec().fingerprint()  # type: ignore[arg-type]
    assert EmbeddingSpec(dim=128).fingerprint() != EmbeddingSpec().fingerprint()


def test_the_static_backend_names_the_command_that_builds_its_model() -> None:
    with pytest.raises(ConfigError, match="`tunegate embeddings distill DIR`"):
        EmbeddingSpec(backend="static")


def test_every_field_selection_embeds_even_an_empty_table() -> None:
    for fields in ("instruction+input+output", "prompt", "output"):
        emb = build_embedder(EmbeddingSpec(fields=fields))  # type: ignore[arg-type]
        v = emb.embed({f: [] for f in FIELDS})
        assert v.shape == (0, emb.dim) and v.dtype == np.float32


@pytest.mark.skipif(importlib.util.find_spec("sentence_transformers") is not None, reason="minilm extra installed")
def test_minilm_without_its_extra_says_what_to_install(superni_slice: list[dict[str, Any]]) -> None:
    emb = build_embedder(EmbeddingSpec(backend="minilm"))
    with pytest.raises(ConfigError, match=r"pip install torch==2\.13\.0"):
        emb.embed(columns(superni_slice[:2]))
