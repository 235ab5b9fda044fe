"""What a later sleep (one with a previous version) replays, on the tiny model: the generic replay matches the
original base, not the drifted previous version."""

from __future__ import annotations

from pathlib import Path

import torch

from consolidation.policy import ExpertConfig, Policy
from consolidation.sleep import SleepConfig, base_replay
from consolidation.targets import Target, replay_targets

PROMPTS = ["What is the capital of France?", "Name three colours.", "How many legs does a spider have?"]


def _drifted(tiny_model: Path, out: Path) -> Path:
    """A previous version that answers generic prompts differently from the base."""
    policy = Policy(tiny_model, None, ExpertConfig(rank=4))
    with torch.no_grad():
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.5)
    policy.save_expert(out)
    return out


def test_replay_from_base_matches_the_original_base_not_the_previous_version(tiny_model: Path, tmp_path: Path) -> None:
    previous = _drifted(tiny_model, tmp_path / "previous")
    policy = Policy(tiny_model, previous, ExpertConfig(rank=4))
    base = Policy(tiny_model, None, ExpertConfig(rank=4))

    def answers(targets: list[Target]) -> list[list[int]]:
        return [t.answer for t in targets]

    cfg = SleepConfig(expert=ExpertConfig(rank=4), replay=tuple(PROMPTS))
    from_base = base_replay(tiny_model, cfg)
    assert answers(from_base) == answers(replay_targets(base, PROMPTS, cfg.seeding.max_new_tokens))
    # The previous version really drifted: matching it would have kept that drift.
    assert answers(from_base) != answers(replay_targets(policy, PROMPTS, cfg.seeding.max_new_tokens))
