"""A real sleep end to end on the tiny model, through the CLI, against a running server: chat sessions ->
export -> consolidate -> the registry holds a complete adapter with lineage -> the server serves it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
from openai import OpenAI

from consolidation.targets import KEYED_TEMPLATES
from sleepd.registry import AdapterRegistry
from tests.conftest import ROOT, Server

FACTS = [
    "Remember this: the vault code is 4471 and the vault is in Oslo.",
    "Correction: the project lead is Dana Whitfield, not Tom.",
]


def run_cli(server: Server, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        env={**server.env, **env}, cwd=ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip


def chat_sessions(server: Server) -> list[str]:
    sessions = []
    with OpenAI(base_url=server.api, api_key="x", max_retries=0) as client:
        for fact in FACTS:
            sid = f"sleep-{uuid.uuid4().hex[:8]}"
            client.chat.completions.create(
                model="sleepd", messages=[{"role": "user", "content": fact}], max_tokens=8,
                extra_headers={"X-Session-Id": sid},
            )  # fmt: skip
            sessions.append(sid)
    return sessions


def test_sleep_cycle_publishes_an_adapter_the_server_serves(server: Server, tmp_path: Path) -> None:
    sessions = chat_sessions(server)
    export = tmp_path / "sessions.jsonl"
    time.sleep(0.5)  # the session log is asynchronous
    r = run_cli(server, "sessions", "export", "--out", str(export))
    assert r.returncode == 0, r.stderr
    exported = [json.loads(line) for line in export.read_text().splitlines()]
    assert {s for s in sessions} <= {e["session_id"] for e in exported}
    mine = tmp_path / "mine.jsonl"
    mine.write_text("".join(json.dumps(e) + "\n" for e in exported if e["session_id"] in sessions))

    # A random tiny model cannot learn facts: relax the gate here (learning is measured in bench/learning).
    report = tmp_path / "report.json"
    r = run_cli(
        server, "consolidate", "--sessions", str(mine), "--steps", "3", "--dream-rounds", "1", "--rank", "8",
        "--report", str(report),
        SLEEPD_GATE_MIN_RECALL_GAIN="-1", SLEEPD_GATE_MAX_ANCHOR_KL="100", SLEEPD_GATE_MAX_BASE_KL="100",
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    summary = json.loads(report.read_text())
    version = summary["published"]
    assert version and summary["gate"]["passed"] and summary["timings_s"]["seeding"] > 0
    # The report keeps the gate's held-out questions (none here: the random tiny model asks no usable question;
    # tests/consolidation/test_gate_examples.py checks the rows) and the limits the gate was judged against.
    assert len(summary["probes"]) == summary["gate"]["probes"]
    assert summary["gate"]["limits"]["max_anchor_kl"] == 100

    meta = AdapterRegistry(server.data_dir / "adapters").verify(version)
    assert meta.source == "sleep" and meta.rank == 8 and [e.rank for e in meta.experts] == [8]
    assert set(meta.lineage["sessions"]) == set(sessions)
    # What this sleep consolidated, in the user's words turned to the assistant's voice, for later sleeps to replay.
    assert {f["text"] for f in meta.lineage["facts"]} == {
        "The vault code is 4471 and the vault is in Oslo.",
        "The project lead is Dana Whitfield, not Tom.",
    }
    # Each fact keeps its held-out probes (the later retention check's questions), apart from what it trained on.
    for f in meta.lineage["facts"]:
        assert not {q for q, _ in f["probes"]} & set(f["questions"]), f
        # And which of its retention probes the published version answered right: later gates' lineage budget.
        trained = f["questions"][:1] or [KEYED_TEMPLATES[0].format(f["spans"][0])]  # sleep.stored_probes
        asked = {q for q, _ in f["probes"]} | set(trained)
        assert isinstance(f["recalled"], list) and set(f["recalled"]) <= asked, f
    assert {"recall_after", "anchor_kl", "base_kl"} <= set(meta.gate)

    # The CLI pointed Redis at it; the running server picks it up and serves it.
    deadline = time.monotonic() + 20
    while httpx.get(server.api + "/models").json()["data"][0]["sleepd_adapter"] != version:
        assert time.monotonic() < deadline, "server did not switch to the published adapter"
        time.sleep(0.1)
    with OpenAI(base_url=server.api, api_key="x", max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="sleepd", messages=[{"role": "user", "content": "Where is the vault?"}], max_tokens=4
        )
    assert raw.headers["x-sleepd-adapter"] == version

    # A second sleep builds on it: the new adapter stacks both experts.
    r = run_cli(
        server, "consolidate", "--sessions", str(mine), "--steps", "2", "--dream-rounds", "0", "--rank", "8",
        "--report", str(report),
        SLEEPD_GATE_MIN_RECALL_GAIN="-1", SLEEPD_GATE_MAX_ANCHOR_KL="100", SLEEPD_GATE_MAX_BASE_KL="100",
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    second = AdapterRegistry(server.data_dir / "adapters").verify(json.loads(report.read_text())["published"])
    assert second.parent == version and second.rank == 16 and [e.rank for e in second.experts] == [8, 8]
    # Its gate also asked the stored facts of the previous version and of the candidate (the retention check).
    gate = json.loads(report.read_text())["gate"]
    assert gate["limits"]["min_stored_kept"] == 0.9 and gate["stored_kept"] <= gate["stored_known"]
    assert gate["stored_known"] <= sum(1 + len(f["probes"]) for f in meta.lineage["facts"])  # trained + held out
    assert gate["stored_allowed"] == (1 if gate["stored_known"] else 0)
    # Told again: the store keeps one copy of each fact.
    assert [f["text"] for f in second.lineage["facts"]] == [f["text"] for f in meta.lineage["facts"]]
    # Back to base for the other tests of this server.
    assert (
        httpx.post(server.base_url + "/admin/adapters/base/activate", headers=server.admin_headers()).status_code == 200
    )


def test_gate_rejects_and_publishes_nothing(server: Server, tmp_path: Path) -> None:
    sessions = chat_sessions(server)
    time.sleep(0.5)
    export = tmp_path / "s.jsonl"
    assert run_cli(server, "sessions", "export", "--out", str(export)).returncode == 0
    lines = [line for line in export.read_text().splitlines() if json.loads(line)["session_id"] in sessions]
    export.write_text("\n".join(lines) + "\n")
    registry = AdapterRegistry(server.data_dir / "adapters")
    before = [m.version for m in registry.versions()]
    # Demand an impossible recall gain: the gate must refuse, with its reasons, and leave the registry alone.
    r = run_cli(server, "consolidate", "--sessions", str(export), "--steps", "1", "--dream-rounds", "0",
                SLEEPD_GATE_MIN_RECALL_GAIN="2")  # fmt: skip
    assert r.returncode == 3, r.stdout + r.stderr
    assert "rejected" in r.stderr and "recall did not improve" in r.stderr
    assert [m.version for m in registry.versions()] == before
