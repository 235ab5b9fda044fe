"""The sleep a deployment's settings ask for.

The worker (worker/cycle.py) and the offline `sleepd consolidate` command both build their `SleepConfig` here, so
an operator's SLEEPD_SLEEP_* settings mean the same thing to both; before, each built its own and the offline
command ignored the rank, Dreaming rounds and sampling length the worker used."""

from __future__ import annotations

from consolidation.dreaming import DreamingConfig
from consolidation.drift import DriftBudget
from consolidation.gate import GateConfig
from consolidation.nullspace import NullSpaceConfig
from consolidation.policy import ExpertConfig
from consolidation.seeding import SeedingConfig
from consolidation.sleep import SleepConfig
from sleepd.config import Settings
from sleepd.keys import DEFAULT_TENANT


def sleep_config(
    settings: Settings, *, rank: int | None = None, steps: int | None = None, dream_rounds: int | None = None,
    tenant: str = DEFAULT_TENANT,
) -> SleepConfig:  # fmt: skip
    """`settings` with a job's own overrides (None: the setting). Everything else keeps SleepConfig's defaults,
    the configuration docs/BENCHMARKS.md measured."""
    tokens = settings.sleep_max_new_tokens
    energy = settings.sleep_nullspace_energy
    return SleepConfig(
        expert=ExpertConfig(rank=rank or settings.sleep_rank),
        seeding=SeedingConfig(epochs=settings.sleep_epochs, steps=steps or settings.sleep_steps, max_new_tokens=tokens),
        dreaming=DreamingConfig(
            rounds=settings.sleep_dream_rounds if dream_rounds is None else dream_rounds, max_new_tokens=tokens
        ),
        gate=GateConfig(
            min_recall_gain=settings.gate_min_recall_gain,
            max_anchor_kl=settings.gate_max_anchor_kl,
            max_base_kl=settings.gate_max_base_kl,
            min_stored_kept=settings.gate_min_stored_kept,
            max_new_tokens=tokens,
        ),
        max_rank=settings.max_lora_rank,
        asked_per_statement=settings.sleep_asked_per_statement,
        drift=DriftBudget(max_kl=settings.sleep_drift_budget) if settings.sleep_drift_budget > 0 else None,
        nullspace=NullSpaceConfig(energy=energy) if energy > 0 else None,
        precision=settings.sleep_precision,
        tenant=tenant,
    )
