"""Our count-sketch hashing vectorizer against scikit-learn's ``HashingVectorizer``, on real records.

    python bench/faiss/hashing_vs_sklearn.py [--n 100000] [--edits 2000] [--repeat 2] [--out RESULT.json]

Records: the N records ``bench/corpus.py N`` writes (the 88k real records, then numbered variants).
scikit-learn gets the same features and the same normalisation as ours: per field (cut to ``max_chars``),
word 1-2-grams (``token_pattern`` ``\\w+``, so one-letter words count as ours do) and ``char_wb`` 4-grams,
lower-cased, hashed into the same ``dim`` buckets with a random sign (``alternate_sign``); each channel
L2-normalized and weighted 1/2, each field 1/F, an empty field one fixed feature, then L2. What differs:
our hash (64-bit, separate per field and channel) and sublinear TF, which HashingVectorizer cannot apply
before the buckets (variant ``sklearn_salted_sublinear`` applies ``1 + log`` to the bucket counts instead),
and one hash for every field and channel (variants ``sklearn_salted*`` give each its own bucket permutation
and signs, as our per-field seeds do).

Measured:
- throughput: records/s of embedding all N records (all three fields), best of ``--repeat``, one process;
- planted light edits (``bench/faiss/corpus.py``'s ``edited``: a typo, a changed case, a word added or
  dropped, spacing, punctuation) of ``--edits`` random records: the cosine to the original, the share
  at the ``near_duplicate`` threshold 0.95 (recall of the candidate stage), and how the two agree;
- random pairs: the cosine noise of far pairs and the candidate pairs (cosine >= 0.95) among the first
  20k records (exact, all pairs): what verification would have to read.

Prints a JSON line. Exits 77 (skipped) when ../shared/corpora is absent.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _result import emit  # bench/faiss/_result.py (scripts run from this folder)

from corpus import CORPORA, FIELDS, SKIP, edited
from tunegate.core.embeddings import EmbeddingSpec, build_embedder

THRESHOLD = 0.95


def load_records(n: int) -> list[dict]:
    """The records of ``bench/corpus.py N`` (loaded by path: bench/faiss has a corpus.py of its own)."""
    spec = importlib.util.spec_from_file_location("bench_corpus", Path(__file__).parents[1] / "corpus.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return [{f: r.get(f) or "" for f in FIELDS} for r in module.iter_records(CORPORA, n)]


class SklearnHashing:
    """scikit-learn's HashingVectorizer, combined and normalized the way our hashing backend is."""

    def __init__(self, spec: EmbeddingSpec, *, salted: bool = False, sublinear: bool = False) -> None:
        from sklearn.feature_extraction.text import HashingVectorizer

        common = dict(n_features=spec.dim, alternate_sign=True, norm=None, lowercase=True, dtype=np.float64)
        self.channels = [HashingVectorizer(analyzer="word", ngram_range=(1, 2), token_pattern=r"(?u)\b\w+\b",
                                           **common),
                         HashingVectorizer(analyzer="char_wb", ngram_range=(4, 4), **common)]
        self.spec, self.sublinear = spec, sublinear
        # HashingVectorizer has no seed: every field and channel shares one hash, so the same word in the
        # instruction of one record and the output of another adds to their cosine. Salted, each field and
        # channel gets its own fixed bucket permutation and signs (ours hashes each with its own seed).
        rng = np.random.default_rng(0)
        self.salts = [(rng.permutation(spec.dim), rng.choice([-1.0, 1.0], spec.dim)) if salted else None
                      for _ in range(2 * len(spec.fields))]

    def embed(self, records: dict[str, list[str]]) -> np.ndarray:
        from sklearn.preprocessing import normalize

        fields = self.spec.fields
        n = len(records[fields[0]])
        out = np.zeros((n, self.spec.dim), dtype=np.float64)
        weight = np.sqrt(1.0 / (2 * len(fields)))
        for fi, name in enumerate(fields):
            texts = [(t or "")[: self.spec.max_chars] for t in records[name]]
            for ci, vectorizer in enumerate(self.channels):
                x = vectorizer.transform(texts).tocsr()
                x.eliminate_zeros()
                if self.sublinear:
                    x.data = np.sign(x.data) * (1.0 + np.log(np.abs(x.data)))
                x = normalize(x, norm="l2")
                empty = np.flatnonzero(np.diff(x.indptr) == 0)
                dense = x.toarray()
                salt = self.salts[2 * fi + ci]
                if salt is not None:
                    dense = dense[:, salt[0]] * salt[1]
                out += dense * weight
                out[empty, 0] += weight  # as ours: an empty field is one fixed feature, so two count as equal
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return (out / np.where(norms > 0, norms, 1)).astype(np.float32)


def candidate_pairs(v: np.ndarray, block: int = 2000) -> int:
    """Pairs i < j with cosine >= THRESHOLD, exact."""
    count = 0
    for start in range(0, len(v), block):
        sims = v[start:start + block] @ v[start:].T
        rows = np.arange(sims.shape[0])
        sims[rows, rows] = -1  # self
        sims[np.tril_indices(sims.shape[0], k=-1)] = -1  # pairs inside the block counted once
        count += int((sims >= THRESHOLD).sum())
    return count


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", a, b)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--edits", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--pairs-of", type=int, default=20_000, help="records whose all-pairs candidates are counted")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if not list(CORPORA.glob("*.jsonl.gz")):
        print(f"skipped: no corpora under {CORPORA}", file=sys.stderr)
        return SKIP
    recs = load_records(args.n)
    cols = {f: [r[f] for r in recs] for f in FIELDS}
    spec = EmbeddingSpec()
    vectorizers = {"ours": build_embedder(spec), "sklearn": SklearnHashing(spec),
                   "sklearn_salted": SklearnHashing(spec, salted=True),
                   "sklearn_salted_sublinear": SklearnHashing(spec, salted=True, sublinear=True)}
    rng = random.Random(0)
    picked = rng.sample(range(len(recs)), args.edits)
    originals = [recs[i] for i in picked]
    copies = [edited(r, rng) for r in originals]
    far = [rng.sample(range(len(recs)), 2) for _ in range(args.edits)]
    res: dict = {"records": len(recs), "dim": spec.dim, "edits": args.edits, "threshold": THRESHOLD}
    edit_cos: dict[str, np.ndarray] = {}
    for name, vec in vectorizers.items():
        best, vectors = float("inf"), None
        for _ in range(args.repeat if name in ("ours", "sklearn") else 1):  # the variants: same transform
            t = time.perf_counter()
            vectors = vec.embed(cols)
            best = min(best, time.perf_counter() - t)
        assert vectors is not None
        a = vec.embed({f: [r[f] for r in originals] for f in FIELDS})
        b = vec.embed({f: [r[f] for r in copies] for f in FIELDS})
        np.testing.assert_array_equal(a, vectors[picked])  # a vector depends on its record alone
        cos = cosine_rows(a, b)
        edit_cos[name] = cos
        far_cos = cosine_rows(vectors[[i for i, _ in far]], vectors[[j for _, j in far]])
        res[name] = {"seconds": round(best, 1), "records_per_s": round(len(recs) / best),
                     "edit_cos_mean": round(float(cos.mean()), 4),
                     "edit_cos_p1": round(float(np.percentile(cos, 1)), 4),
                     "edit_cos_p5": round(float(np.percentile(cos, 5)), 4),
                     "edit_recall_at_threshold": round(float((cos >= THRESHOLD).mean()), 4),
                     "far_cos_mean": round(float(far_cos.mean()), 4),
                     "far_abs_cos_mean": round(float(np.abs(far_cos).mean()), 4),
                     f"candidate_pairs_in_first_{args.pairs_of}": candidate_pairs(vectors[:args.pairs_of])}
        print(json.dumps({name: res[name]}), file=sys.stderr, flush=True)
    ours = edit_cos.pop("ours")
    ok = ours >= THRESHOLD
    for name, theirs in edit_cos.items():
        res[name]["agreement_with_ours"] = {
            "edit_cos_corr": round(float(np.corrcoef(ours, theirs)[0, 1]), 4),
            "edit_cos_mean_abs_diff": round(float(np.abs(ours - theirs).mean()), 4),
            "same_side_of_threshold": round(float((ok == (theirs >= THRESHOLD)).mean()), 4),
            "only_ours_at_threshold": int((ok & (theirs < THRESHOLD)).sum()),
            "only_theirs_at_threshold": int(((theirs >= THRESHOLD) & ~ok).sum())}
    import sklearn

    res["sklearn_version"] = sklearn.__version__
    return emit(res, args.out)


if __name__ == "__main__":
    sys.exit(main())
