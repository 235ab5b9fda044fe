"""An operator's SLEEPD_SLEEP_* settings reach the sleep the same way from the worker and `sleepd consolidate`."""

from __future__ import annotations

from pathlib import Path

import pytest

from consolidation.from_settings import sleep_config
from consolidation.sleep import SleepConfig
from sleepd.config import Settings


def test_unset_settings_give_the_benchmarked_defaults(tmp_path: Path) -> None:
    cfg, shipped = sleep_config(Settings(data_dir=tmp_path)), SleepConfig()
    assert cfg.expert == shipped.expert
    assert cfg.seeding == shipped.seeding
    assert cfg.dreaming == shipped.dreaming
    assert cfg.nullspace == shipped.nullspace and cfg.drift is None
    assert cfg.precision == shipped.precision == "fp32"
    assert cfg.gate.max_anchor_kl == shipped.gate.max_anchor_kl
    assert cfg.gate.min_stored_kept == shipped.gate.min_stored_kept


def test_settings_and_job_overrides_reach_every_phase(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"RANK": "8", "DREAM_ROUNDS": "3", "MAX_NEW_TOKENS": "24", "NULLSPACE_ENERGY": "0",
                        "DRIFT_BUDGET": "0.05", "EPOCHS": "6", "PRECISION": "auto"}.items():  # fmt: skip
        monkeypatch.setenv(f"SLEEPD_SLEEP_{name}", value)
    settings = Settings(data_dir=tmp_path, max_lora_rank=32)
    cfg = sleep_config(settings, tenant="acme")
    got = (cfg.expert.rank, cfg.dreaming.rounds, cfg.seeding.epochs, cfg.max_rank, cfg.tenant)
    assert got == (8, 3, 6.0, 32, "acme")
    assert cfg.seeding.max_new_tokens == cfg.dreaming.max_new_tokens == cfg.gate.max_new_tokens == 24
    assert cfg.nullspace is None  # 0 turns the projection off
    assert cfg.precision == "auto"
    assert cfg.drift is not None and cfg.drift.max_kl == 0.05
    # A job's own options win over the settings; 0 Dreaming rounds means none, not "the setting".
    job = sleep_config(settings, rank=4, steps=12, dream_rounds=0)
    assert (job.expert.rank, job.seeding.steps, job.dreaming.rounds) == (4, 12, 0)
