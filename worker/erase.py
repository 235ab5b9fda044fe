"""The erase job: make a tenant's adapters forget erased sessions, in the weights.

The admin call already deleted the sessions' records from Redis and marked them erased. This job, holding the
sleep lock (no cycle runs beside it), then:

1. rewrites every sleep snapshot and archive file without the sessions' records;
2. marks *tainted* every version of the tenant whose lineage names an erased session, and every descendant of
   one (each sleep stacks on its parent's experts and replays its parent's fact store);
3. if the active version is tainted, rebuilds the lineage from the last clean ancestor: one sleep over the
   remaining sessions the tainted versions had consolidated (the records still in Redis), gated as usual; the
   pointer moves (compare-and-set, fenced) to the rebuilt version, or to the clean ancestor itself when nothing
   is left to relearn or the gate rejects the rebuild;
4. purges the tainted versions from the registry and tells every server (they unload them and delete merged
   copies), and strips the reports of the jobs that made them (they can quote training questions).

The job's report says what was tainted, what it was rebuilt from, what was relearned, and which sessions could
not be (trimmed from Redis by retention: the tainted adapter was their only copy).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any

import redis

from sleepd import keys
from sleepd.active_adapter import Fence, PointerFenced, read_active, write_active
from sleepd.config import Settings
from sleepd.erasure import erased, scrub_files, session_records
from sleepd.jobs import JobStore
from sleepd.keys import DEFAULT_TENANT
from sleepd.registry import BASE, AdapterMeta, AdapterRegistry
from worker.lock import LockLost, SleepLock

log = logging.getLogger(__name__)


def tainted_versions(versions: list[AdapterMeta], gone: set[str], everything: bool = False) -> set[str]:
    """Versions whose lineage names an erased session, and their descendants."""
    tainted = {m.version for m in versions if everything or gone & set(m.lineage.get("sessions", []))}
    grew = True
    while grew:
        grew = False
        for m in versions:
            if m.parent in tainted and m.version not in tainted:
                tainted.add(m.version)
                grew = True
    return tainted


def clean_ancestor(version: str, by_version: dict[str, AdapterMeta], tainted: set[str]) -> tuple[str, list[str]]:
    """The nearest ancestor of `version` (itself included) that is not tainted, and the tainted chain above it."""
    chain: list[str] = []
    while version != BASE and version in tainted:
        chain.append(version)
        meta = by_version.get(version)
        version = meta.parent if meta and meta.parent else BASE
    return version, chain


def run_erasure(job_id: str, options: dict[str, Any], settings: Settings, client: redis.Redis) -> dict[str, Any]:
    from worker.cycle import _consolidate, _finish  # the same training path as a sleep

    jobs = JobStore(client)
    tenant = str(options["tenant"])
    start = time.monotonic()
    owner = f"{job_id}:{uuid.uuid4().hex[:8]}"
    lock = SleepLock(client, owner, settings.sleep_lock_ttl_s, job_id=job_id,
                     slot_ttl_s=settings.sleep_visibility_timeout_s)  # fmt: skip
    with lock:
        jobs.update(job_id, state="running", phase="scrub", started_at=time.time())
        gone = erased(client, tenant)
        roots = [settings.data_dir / "sleep"]
        if settings.session_archive_dir:
            roots.append(Path(settings.session_archive_dir))
        scrubbed = scrub_files(roots, tenant, gone)

        registry = AdapterRegistry(settings.adapters_dir)
        versions = registry.versions(tenant)
        by_version = {m.version: m for m in versions}
        tainted = tainted_versions(versions, gone, bool(options.get("all")))
        active = read_active(client, tenant)
        report: dict[str, Any] = {
            "tenant": tenant, "erased_sessions": len(gone), "scrubbed_records": scrubbed,
            "tainted": sorted(tainted, key=lambda v: int(v[1:])), "active_before": active,
        }  # fmt: skip
        target = active
        if active in tainted:
            clean, chain = clean_ancestor(active, by_version, tainted)
            relearn = {s for v in chain for s in by_version[v].lineage.get("sessions", [])} - gone
            records, missing = session_records(client, tenant, relearn)
            records = [r for r in records if r.learn and r.status != "error"]
            report |= {"clean_ancestor": clean, "relearn_sessions": len(relearn) - len(missing),
                       "unavailable_sessions": len(missing), "relearn_records": len(records)}  # fmt: skip
            target = clean
            if records:
                jobs.update(job_id, phase="rebuild")
                workdir = settings.data_dir / "sleep" / job_id
                workdir.mkdir(parents=True, exist_ok=True)
                built = _consolidate(job_id, {"force": True}, settings, client, jobs, records, workdir, tenant, clean)
                report["rebuild_gate"] = built.get("gate", {})
                if built.get("version"):
                    target = built["version"]
            report["rebuilt"] = target if target != clean else None
            lock.check()
            try:
                write_active(client, target, expected=active, reason="erasure", fence=Fence(lock.token, lock.owner),
                             tenant=tenant)  # fmt: skip
            except PointerFenced as exc:
                raise LockLost(str(exc)) from exc
        report["active_after"] = target

        jobs.update(job_id, phase="purge")
        purged = [v for v in report["tainted"] if registry.purge(v)]
        if purged:
            client.publish(keys.ADAPTER_EVENTS, json.dumps({"tenant": tenant, "purged": purged, "at": time.time()}))
        report["purged"] = purged
        _strip_reports(jobs, tenant, set(purged), gone)
        report["seconds"] = round(time.monotonic() - start, 1)
        log.info("erasure %s for tenant %s: %s", job_id, tenant, report)
        jobs.update(job_id, state="done", phase="done", progress=1.0, finished_at=time.time(), report=report)
    _finish(client, job_id)
    return jobs.get(job_id) or {}


def _strip_reports(jobs: JobStore, tenant: str, purged: set[str], gone: set[str]) -> None:
    """One pass over the kept job records. A cycle that published a purged version keeps its state, not its
    report. Any other cycle of the tenant (a rejected one is never purged) keeps its report without the gate
    probes drawn from an erased session, its own facts' and earlier facts' (they quote the sessions)."""
    for job in jobs.recent(1000):
        report = job.get("report") or {}
        if not isinstance(report, dict):
            continue
        if report.get("version") in purged or report.get("published") in purged:
            jobs.update(job["job_id"], report={"erased": True, "version": report.get("version")})
            continue
        if (job.get("options") or {}).get("tenant", DEFAULT_TENANT) != tenant:
            continue
        rows = {key: report.get(key) or [] for key in ("probes", "earlier")}
        kept = {key: [p for p in r if not gone & set(p.get("sessions", []))] for key, r in rows.items()}
        if kept != rows:
            jobs.update(job["job_id"], report=report | kept)
