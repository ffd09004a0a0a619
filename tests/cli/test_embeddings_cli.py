"""`tunegate embeddings distill DIR`: builds the static backend's model once; a missing extra is exit 2."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

import tunegate.core.embeddings
from tunegate.cli import EXIT_OK, EXIT_USAGE, main


def test_distill_writes_the_model_where_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[tuple[str, int]] = []

    def fake_distill(out_dir: str | Path, *, pca_dims: int = 256) -> Path:
        calls.append((str(out_dir), pca_dims))
        return Path(out_dir)

    # the real distillation needs torch and model2vec[distill] and takes minutes: only the wiring is tested
    monkeypatch.setattr(tunegate.core.embeddings, "distill_static_model", fake_distill)
    model = tmp_path / "static-minilm"
    assert main(["embeddings", "distill", str(model), "--dims", "128", "-q"]) == EXIT_OK
    assert calls == [(str(model), 128)]
    assert capsys.readouterr().out.strip() == str(model)
    assert main(["embeddings", "distill", str(model), "-q"]) == EXIT_OK
    assert calls[-1] == (str(model), 256)


def test_distill_rejects_a_bad_dimension(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["embeddings", "distill", str(tmp_path / "m"), "--dims", "0", "-q"]) == EXIT_USAGE
    assert "--dims must be a positive number" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


@pytest.mark.skipif(importlib.util.find_spec("model2vec") is not None, reason="model2vec installed")
def test_distill_without_its_extras_says_what_to_install(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["embeddings", "distill", str(tmp_path / "m"), "-q"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("tunegate: error: distilling a static model needs")
    assert "model2vec[distill]" in err
    assert not (tmp_path / "m").exists()
