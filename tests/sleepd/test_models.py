"""Model resolution: local folders are served as they are; wrong paths fail clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from sleepd.models import ModelNotFound, resolve_model


def test_local_folder_and_hub_id(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    assert resolve_model(str(tmp_path / "m"), tmp_path) == str((tmp_path / "m").resolve())
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct", tmp_path) == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_bad_local_paths(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound):
        resolve_model(str(tmp_path / "missing"), tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFound):
        resolve_model(str(tmp_path / "empty"), tmp_path)
