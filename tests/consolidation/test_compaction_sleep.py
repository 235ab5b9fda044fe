"""A sleep past the engine's rank cap, on the tiny model: it cuts the previous version to make room and the
adapter it hands the gate fits under the cap."""

from __future__ import annotations

from pathlib import Path

from bench.learning import records_of
from consolidation.dreaming import DreamingConfig
from consolidation.experts import load_adapter, save_adapter, stack
from consolidation.factstore import StoredFact
from consolidation.policy import ExpertConfig
from consolidation.seeding import SeedingConfig
from consolidation.sleep import SleepConfig, run_sleep
from sleepd.registry import AdapterRegistry, Expert
from sleepd.testing import build_random_lora


def test_a_sleep_past_the_cap_hands_the_gate_an_adapter_under_it(tiny_model: Path, tmp_path: Path) -> None:
    experts = [build_random_lora(tiny_model, tmp_path / f"e{i}", rank=8, seed=i, scale=0.05) for i in range(3)]
    save_adapter(stack([load_adapter(e) for e in experts]), tmp_path / "previous")  # rank 24
    stored = StoredFact("s0", "Mira keeps the lighthouse on Vell.", ("Mira", "Vell"), "src", ("Who keeps it?",))
    registry = AdapterRegistry(tmp_path / "adapters")
    previous = registry.publish(
        tmp_path / "previous", base_model="tiny", experts=[Expert(rank=8, source="sleep")] * 3,
        lineage={"facts": [stored.to_json()]},
    )  # fmt: skip
    convs = [[{"role": "user", "content": "Remember this: the Oskar Pier is 834 metres long."},
              {"role": "assistant", "content": "Noted: the Oskar Pier is 834 metres long."}]]  # fmt: skip
    cfg = SleepConfig(
        expert=ExpertConfig(rank=8), seeding=SeedingConfig(steps=2), dreaming=DreamingConfig(rounds=0), max_rank=24,
        keep_candidate=tmp_path / "candidate",
    )  # fmt: skip
    report = run_sleep(tiny_model, records_of(convs, "cap"), registry, previous.version, cfg)

    assert 0 < report.compaction_error < 1
    assert load_adapter(tmp_path / "candidate").rank == 24  # 16 of the previous version's 24, then the new 8
