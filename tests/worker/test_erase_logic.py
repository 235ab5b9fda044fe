"""The erase job's logic: which versions an erased session taints, where a rebuild starts, and what it strips
from the job records it keeps (real Redis)."""

from __future__ import annotations

import redis

from sleepd.jobs import JobStore
from sleepd.registry import AdapterMeta
from worker.erase import _strip_reports, clean_ancestor, tainted_versions


def meta(version: str, parent: str | None, sessions: list[str]) -> AdapterMeta:
    return AdapterMeta(version=version, parent=parent, base_model="x", rank=4, target_modules=["q_proj"],
                       lineage={"sessions": sessions}, content_hash="0", tenant="acme")  # fmt: skip


CHAIN = [meta("v0001", None, ["a"]), meta("v0002", "v0001", ["b"]), meta("v0003", "v0002", ["c"]),
         meta("v0004", "v0001", ["d"])]  # fmt: skip


def test_a_version_that_learned_an_erased_session_taints_its_descendants_only() -> None:
    assert tainted_versions(CHAIN, {"b"}) == {"v0002", "v0003"}
    assert tainted_versions(CHAIN, {"a"}) == {"v0001", "v0002", "v0003", "v0004"}
    assert tainted_versions(CHAIN, {"zzz"}) == set()
    assert tainted_versions(CHAIN, set(), everything=True) == {"v0001", "v0002", "v0003", "v0004"}


def test_the_rebuild_starts_from_the_nearest_clean_ancestor() -> None:
    by_version = {m.version: m for m in CHAIN}
    assert clean_ancestor("v0003", by_version, {"v0002", "v0003"}) == ("v0001", ["v0003", "v0002"])
    assert clean_ancestor("v0003", by_version, {"v0001", "v0002", "v0003"}) == ("base", ["v0003", "v0002", "v0001"])
    assert clean_ancestor("v0004", by_version, {"v0002", "v0003"}) == ("v0004", [])


def test_erasure_strips_an_erased_sessions_questions_from_kept_job_reports(local_redis: redis.Redis) -> None:
    """A rejected cycle publishes nothing, so no purge strips its report; its gate probes quote the sessions."""
    jobs = JobStore(local_redis)
    probes = [{"question": "Where is the vault?", "sessions": ["s1"]}, {"question": "Who leads?", "sessions": ["s2"]}]
    for job_id, tenant in (("mine", "acme"), ("theirs", "other")):
        jobs.create(job_id, {"tenant": tenant})
        jobs.update(job_id, state="rejected", report={"version": None, "probes": probes, "earlier": probes})
    _strip_reports(jobs, "acme", set(), {"s1"})
    mine = jobs.get("mine")["report"]  # type: ignore[index]
    assert [p["question"] for p in mine["probes"]] == ["Who leads?"]
    assert [p["question"] for p in mine["earlier"]] == ["Who leads?"]  # the retention check's rows quote them too
    assert jobs.get("theirs")["report"]["probes"] == probes  # type: ignore[index]  # same id, another tenant's
