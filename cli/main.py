"""The `sleepd` command line: `up` runs the whole system, `serve` the API alone."""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any, cast

import typer
from rich.console import Console

from sleepd.config import Settings
from sleepd.jobs import TERMINAL

app = typer.Typer(help="sleepd: LLM serving that keeps learning.", no_args_is_help=True)
model_app = typer.Typer(help="The served model.", no_args_is_help=True)
app.add_typer(model_app, name="model")
adapters_app = typer.Typer(help="Adapter versions (through the admin API of a running server).", no_args_is_help=True)
app.add_typer(adapters_app, name="adapters")
console = Console(stderr=True)


def _settings() -> Settings:
    return Settings()


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Overrides SLEEPD_HOST.")] = None,
    port: Annotated[int | None, typer.Option(help="Overrides SLEEPD_PORT.")] = None,
) -> None:
    """Run the API server (OpenAI-compatible, vLLM engine in-process)."""
    import uvicorn

    from app.main import create_app

    settings = _settings()
    if host:
        settings.host = host
    if port:
        settings.port = port
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="info",
        timeout_graceful_shutdown=30,
    )


@app.command()
def worker() -> None:
    """Run the sleep worker (Celery, solo pool: one cycle at a time, in this process, GPU-safe)."""
    from sleepd.sleep_queue import QUEUE
    from worker.celery_app import celery_app

    _check_redis(_settings().redis_url)
    celery_app.worker_main(["worker", "--pool", "solo", "--queues", QUEUE, "--loglevel", "INFO",
                            "--hostname", f"sleepd-worker-{os.getpid()}@%h"])  # fmt: skip


@app.command()
def scheduler() -> None:
    """Run the sleep scheduler (Celery beat): checks the low-traffic window every SLEEP_CHECK_INTERVAL_S."""
    from worker.celery_app import celery_app

    settings = _settings()
    (settings.data_dir / "beat").mkdir(parents=True, exist_ok=True)
    celery_app.start(["beat", "--loglevel", "INFO", "--schedule", str(settings.data_dir / "beat" / "schedule")])


@app.command()
def flower(
    port: Annotated[int | None, typer.Option(help="Overrides SLEEPD_FLOWER_PORT.")] = None,
) -> None:
    """Run Flower, Celery's monitor: workers, queue and tasks in a web UI, and as Prometheus metrics at /metrics."""
    from worker.celery_app import celery_app

    settings = _settings()
    celery_app.start(["flower", f"--address={settings.host}", f"--port={port or settings.flower_port}",
                      "--purge_offline_workers=300"])  # fmt: skip


@app.command("sleep")
def sleep_cmd(
    wait: Annotated[bool, typer.Option(help="Follow the cycle with a progress bar until it ends.")] = False,
    force: Annotated[bool, typer.Option(help="Start even outside a low-traffic window.")] = False,
    steps: Annotated[int | None, typer.Option(help="Knowledge Seeding steps.")] = None,
    dream_rounds: Annotated[int | None, typer.Option(help="Dreaming rounds.")] = None,
    tenant: Annotated[str, typer.Option(help="Whose sessions and adapter lineage.")] = "default",
) -> None:
    """Trigger a sleep cycle through the admin API (and watch it with --wait)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    body = {"force": force, "steps": steps, "dream_rounds": dream_rounds, "tenant": tenant}
    job = _admin("POST", "/admin/sleep", json={k: v for k, v in body.items() if v is not None})
    job_id = job["job_id"]
    console.print(f"sleep cycle [bold]{job_id}[/] queued")
    if not wait:
        return
    with Progress(TextColumn("{task.description:<10}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console) as bar:  # fmt: skip
        task = bar.add_task("queued", total=1.0, info="")
        while True:
            state = _admin("GET", f"/admin/sleep/{job_id}")
            bar.update(task, description=str(state.get("phase")), completed=float(state.get("progress") or 0),
                       info=str(state.get("info", ""))[:60])  # fmt: skip
            if state["state"] in TERMINAL:
                break
            time.sleep(1)
    color = {"published": "green", "rejected": "yellow", "skipped": "yellow"}.get(state["state"], "red")
    console.print(f"[{color}]{state['state']}[/]: " + json.dumps(state.get("metrics") or state.get("error") or {}))
    if state["state"] == "failed":
        raise typer.Exit(1)


def _check_redis(url: str) -> None:
    import redis

    from sleepd.local_redis import UnsafeRedis, check_eviction_policy

    client = redis.Redis.from_url(url, socket_timeout=2)
    try:
        check_eviction_policy(client)
    except UnsafeRedis as exc:
        console.print(f"[red]refusing to start[/]: {exc}")
        raise typer.Exit(2) from None
    except (redis.RedisError, OSError):
        pass  # unreachable now: the server spools, the worker retries; the check runs again at the next start
    finally:
        client.close()


@app.command()
def up() -> None:
    """Run the whole system: a local Redis if none answers, the API server, the sleep worker and scheduler, and
    Flower (Celery's monitor) unless SLEEPD_FLOWER_PORT is 0."""
    from sleepd.local_redis import redis_answers, start_redis, with_password

    settings = _settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if settings.admin_token is None:
        env["SLEEPD_ADMIN_TOKEN"] = _secret(settings.data_dir / "admin_token")
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    # The local Redis `up` starts requires a password, made once and kept private in the data dir.
    local_url = with_password(settings.redis_url, _secret(settings.data_dir / "redis_password"))
    if redis_answers(settings.redis_url):
        console.print(f"[green]redis[/] answering at {settings.redis_url}")
        _check_redis(settings.redis_url)
    elif redis_answers(local_url):
        console.print("[green]redis[/] the local one from an earlier `sleepd up` is answering")
        env["SLEEPD_REDIS_URL"] = local_url
    else:
        console.print(f"[yellow]redis[/] not answering at {settings.redis_url}: starting a local one (AOF, password)")
        local = start_redis(settings.redis_url, settings.redis_dir, maxmemory=settings.redis_maxmemory,
                            password=_secret(settings.data_dir / "redis_password"))  # fmt: skip
        children.append(("redis", local))
        env["SLEEPD_REDIS_URL"] = local_url
    for name in ("api", "worker", "scheduler", *(("flower",) if settings.flower_port else ())):
        cmd = "serve" if name == "api" else name
        children.append((name, subprocess.Popen([sys.executable, "-m", "cli", cmd], env=env)))
    console.print(
        f"[green]sleepd[/] API on http://{settings.host}:{settings.port}/v1 (model '{settings.served_model_name}'); "
        f"admin token in {settings.data_dir / 'admin_token'}"
    )
    _supervise(children)


def _supervise(children: list[tuple[str, subprocess.Popen[bytes]]]) -> None:
    """Wait until a child exits or we are told to stop; then stop the rest, newest first."""
    stopping = False

    def _stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    code = 0
    while not stopping:
        for name, proc in children:
            if proc.poll() is not None:
                console.print(f"[red]{name}[/] exited with {proc.returncode}; stopping")
                code = proc.returncode or 1
                stopping = True
        time.sleep(0.2)
    for _, proc in reversed(children):
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.kill()
    raise typer.Exit(code)


def _redis_url(settings: Settings) -> str:
    """SLEEPD_REDIS_URL, or the password-protected local Redis that `sleepd up` started in this data dir."""
    from sleepd.local_redis import redis_answers, with_password

    password = settings.data_dir / "redis_password"
    if password.exists() and not redis_answers(settings.redis_url):
        return with_password(settings.redis_url, password.read_text().strip())
    return settings.redis_url


def _secret(path: Path) -> str:
    """A secret `up` makes once and keeps private in the data dir (the admin token when SLEEPD_ADMIN_TOKEN is
    unset, the local Redis's password)."""
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32))
    return path.read_text().strip()


@model_app.command("prepare")
def model_prepare() -> None:
    """Make the served model ready (converts the bundled default model once) and print its folder."""
    from sleepd.models import resolve_model

    settings = _settings()
    logging.basicConfig(level=logging.INFO)
    print(resolve_model(settings.model, settings.models_dir))


@app.command()
def report(job_id: Annotated[str, typer.Argument(help="The sleep job's id (`sleepd sleep` prints it).")]) -> None:
    """One sleep cycle: phase timings, the gate against its limits, held-out answers before and after, lineage.
    The same page in a browser: GET /admin/sleep/JOB/report."""
    from rich.table import Table

    from sleepd.sleep_report import build

    out = Console()  # the report is the command's output (stdout); errors go to stderr
    job = _admin("GET", f"/admin/sleep/{job_id}")
    tenant = (job.get("options") or {}).get("tenant", "default")
    r = build(job, _admin("GET", "/admin/adapters", params={"tenant": tenant})["data"])
    color = {"published": "green", "failed": "red"}.get(r.state, "yellow")
    built = f"built [bold]{r.version}[/]" if r.version else "no version published"
    out.print(f"sleep [bold]{r.job_id}[/] [{color}]{r.state}[/]{f' ({r.now})' if r.now else ''}  tenant {r.tenant}"
              f"  {r.started}  {built}" + (f" on {r.parent}" if r.parent else ""))  # fmt: skip
    out.print("  ".join(f"{k.replace('_', ' ')}: {v}" for k, v in r.totals.items() if v is not None))
    for reason in [*r.reasons, *([r.error] if r.error else [])]:
        out.print(f"[red]- {reason}[/]")
    phases = Table("phase", "", "wall s", "CPU s", title="phases", title_justify="left")
    for p in r.phases:
        phases.add_row(p.name, "█" * max(1, round(40 * p.share)), f"{p.seconds}", f"{p.cpu_s or '-'}")
    if phases.rows:
        out.print(phases)
    gate = Table("check", "value", "passes when", "", title="gate", title_justify="left")
    for c in r.checks:
        gate.add_row(c.label, f"{c.value:.3f}", c.rule, "[green]pass[/]" if c.ok else "[red]fail[/]")
    if gate.rows:
        out.print(gate)
    title = f"held-out questions, closed-book: {r.known_before} right before, {r.learned} after"
    probes = Table("question", "states", "before", "after", title=title, title_justify="left")
    mark = {True: "[green]✓[/] ", False: "[red]✗[/] "}
    for q in r.probes:
        probes.add_row(q["question"], ", ".join(q["expected"]), mark[q["before_ok"]] + q["before"][:80],
                       mark[q["after_ok"]] + q["after"][:80])  # fmt: skip
    if probes.rows:
        out.print(probes)
    earlier = Table("question", "states", "previous version", "this candidate",
                    title="earlier facts the lineage recalled", title_justify="left")  # fmt: skip
    for q in r.earlier:
        earlier.add_row(q["question"], ", ".join(q["expected"]), q["before"][:80],
                        ("[green]✓[/] " if q["after_ok"] else "[red]✗ lost[/] ") + q["after"][:80])  # fmt: skip
    if earlier.rows:
        out.print(earlier)
    lineage = Table("version", "published", "sessions", "facts", "gate recall", "anchor KL", title="lineage",
                    title_justify="left")  # fmt: skip
    for a in r.lineage:
        lineage.add_row(a.version + (" (this cycle)" if a.this else ""), a.created_at, str(a.sessions), str(a.facts),
                        a.recall, a.anchor_kl)  # fmt: skip
    lineage.add_row("base", "", "", "", "", "")
    out.print(lineage)


def _admin(method: str, path: str, **kwargs: Any) -> Any:
    """Call the running server's admin API with the configured (or `up`-generated) token."""
    import httpx

    settings = _settings()
    token = settings.admin_token.get_secret_value() if settings.admin_token else None
    token_file = settings.data_dir / "admin_token"
    if token is None and token_file.exists():
        token = token_file.read_text().strip()
    if not token:
        console.print("[red]no admin token:[/] set SLEEPD_ADMIN_TOKEN (or run `sleepd up`, which makes one)")
        raise typer.Exit(2)
    url = f"http://{settings.host}:{settings.port}{path}"
    try:
        r = httpx.request(method, url, headers={"Authorization": f"Bearer {token}"}, timeout=120, **kwargs)
    except httpx.HTTPError as exc:
        console.print(f"[red]cannot reach sleepd at {url}:[/] {exc}")
        raise typer.Exit(1) from exc
    if r.status_code >= 400:
        console.print(f"[red]{r.status_code}:[/] {r.json().get('error', {}).get('message', r.text)}")
        raise typer.Exit(1)
    return r.json()


TenantOption = Annotated[str, typer.Option(help="Whose adapter lineage (tenants: `sleepd keys`).")]


@adapters_app.command("list")
def adapters_list(tenant: TenantOption = "default") -> None:
    """A tenant's versions in the registry, with lineage and gate metrics; marks the active one."""
    from rich.table import Table

    body = _admin("GET", "/admin/adapters", params={"tenant": tenant})
    table = Table("version", "parent", "rank", "source", "created", "gate")
    for m in body["data"]:
        mark = " *" if m["version"] == body["active"] else ""
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(m["created_at"]))
        gate = ", ".join(f"{k}={v}" for k, v in m["gate"].items())
        table.add_row(m["version"] + mark, m["parent"] or "-", str(m["rank"]), m["source"], created, gate)
    Console().print(table)
    console.print(f"active: [bold]{body['active']}[/] (this server serves {body['serving']})")


@adapters_app.command("activate")
def adapters_activate(
    version: Annotated[str, typer.Argument(help="A version such as v0003, or 'base'.")],
    tenant: TenantOption = "default",
) -> None:
    """Switch every server to VERSION (roll forward or back) with no downtime."""
    body = _admin("POST", f"/admin/adapters/{version}/activate", params={"tenant": tenant})
    console.print(f"[green]active:[/] {body['active']} (was {body['previous']})")


@adapters_app.command("publish")
def adapters_publish(
    path: Annotated[Path, typer.Argument(help="A PEFT LoRA folder for the served base model.")],
    activate: Annotated[bool, typer.Option(help="Activate it right away.")] = False,
    tenant: TenantOption = "default",
) -> None:
    """Register an adapter trained elsewhere as a new version (validated by the running engine)."""
    body = _admin("POST", "/admin/adapters", json={"path": str(path.resolve()), "activate": activate, "tenant": tenant})
    console.print(f"[green]published[/] {body['version']} (rank {body['rank']})" + (", active" if activate else ""))


sessions_app = typer.Typer(help="The session log.", no_args_is_help=True)
app.add_typer(sessions_app, name="sessions")


@sessions_app.command("export")
def sessions_export(
    out: Annotated[Path, typer.Option("--out", help="JSONL file to write (one ExchangeRecord per line).")],
    redis_url: Annotated[str | None, typer.Option(help="Overrides SLEEPD_REDIS_URL.")] = None,
    tenant: TenantOption = "default",
) -> None:
    """Export every logged exchange of a tenant from its Redis stream, oldest first."""
    import redis

    from sleepd import keys

    client = redis.Redis.from_url(redis_url or _redis_url(_settings()), decode_responses=True)
    n = 0
    start = "-"
    with open(out, "w", encoding="utf-8") as f:
        stream = keys.session_stream(tenant)
        while rows := cast(list[tuple[str, dict[str, str]]], client.xrange(stream, min=start, count=1000)):
            f.writelines(fields["data"] + "\n" for _, fields in rows)
            n += len(rows)
            start = f"({rows[-1][0]}"  # exclusive: continue after the last entry read
    console.print(f"exported {n} exchange(s) to {out}")


@sessions_app.command("erase")
def sessions_erase(
    session_id: Annotated[str | None, typer.Argument(help="The session to erase.")] = None,
    tenant: TenantOption = "default",
    all_sessions: Annotated[bool, typer.Option("--all", help="Erase every session of the tenant.")] = False,
    wait: Annotated[bool, typer.Option(help="Wait for the erase job (rebuild and purge) to end.")] = False,
) -> None:
    """Erase a session (or all of a tenant's) from the log, the snapshots and the adapters' weights."""
    if bool(session_id) == all_sessions:
        console.print("[red]give a SESSION_ID or --all[/]")
        raise typer.Exit(2)
    path = f"/admin/tenants/{tenant}/sessions" if all_sessions else f"/admin/sessions/{session_id}"
    body = _admin("DELETE", path, params={} if all_sessions else {"tenant": tenant})
    console.print(f"{body['records_deleted']} record(s) deleted; erase job {body['job_id'] or '(pending)'} "
                  f"{body['state']}")  # fmt: skip
    while wait and body.get("job_id"):
        job = _admin("GET", f"/admin/erasures/{body['job_id']}")
        if job["state"] in TERMINAL:
            console.print(json.dumps(job.get("report") or job.get("error")))
            if job["state"] == "failed":
                raise typer.Exit(1)
            break
        time.sleep(1)


keys_app = typer.Typer(help="API keys and tenants (through the admin API of a running server).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Argument(help="The tenant the key belongs to (its own memory).")],
    name: Annotated[str, typer.Option(help="A label for listings.")] = "",
    learn: Annotated[bool, typer.Option(help="Consolidate this key's sessions.")] = True,
    opted_out: Annotated[str, typer.Option(help="Exchanges not to be learned: 'audit' (logged) or 'drop'.")] = "audit",
) -> None:
    """Create an API key; it is printed once (sleepd keeps only its hash). /v1 requires keys from now on."""
    body = _admin("POST", "/admin/keys", json={"tenant": tenant, "name": name, "learn": learn, "opted_out": opted_out})
    console.print(f"[green]{body['id']}[/] for tenant [bold]{body['tenant']}[/]: {body['key']}")


@keys_app.command("list")
def keys_list(tenant: Annotated[str | None, typer.Option(help="Only this tenant's keys.")] = None) -> None:
    """API keys (never their secrets), revoked ones included."""
    from rich.table import Table

    body = _admin("GET", "/admin/keys", params={"tenant": tenant} if tenant else {})
    table = Table("id", "tenant", "name", "prefix", "learn", "opted out", "active")
    for k in body["data"]:
        table.add_row(k["id"], k["tenant"], k["name"], k["prefix"], str(k["learn"]), k["opted_out"], str(k["active"]))
    Console().print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key's id (key_...).")]) -> None:
    """Revoke a key: its requests get 401 and leave no record."""
    _admin("DELETE", f"/admin/keys/{key_id}")
    console.print(f"[green]revoked[/] {key_id}")


@keys_app.command("tenants")
def keys_tenants() -> None:
    """Tenants with their active adapter version, keys and sessions."""
    from rich.table import Table

    body = _admin("GET", "/admin/tenants")
    table = Table("tenant", "active", "keys", "sessions")
    for t in body["data"]:
        table.add_row(t["tenant"], t["active"], str(t["keys"]), str(t["sessions"]))
    Console().print(table)
    console.print("API keys required" if body["keyed"] else "no API keys: /v1 is open (one shared memory)")


@app.command()
def consolidate(
    sessions: Annotated[Path, typer.Option("--sessions", help="JSONL of exchange records (sleepd sessions export).")],
    registry: Annotated[Path | None, typer.Option(help="Adapter registry folder; default SLEEPD_REGISTRY_DIR.")] = None,
    active: Annotated[
        str | None, typer.Option(help="Adapter to build on; default: Redis's active one, else base.")
    ] = None,
    steps: Annotated[
        int | None, typer.Option(help="Knowledge Seeding steps (default: SLEEPD_SLEEP_EPOCHS over the questions).")
    ] = None,
    dream_rounds: Annotated[
        int | None, typer.Option(help="Dreaming rounds (0 to skip; default SLEEPD_SLEEP_DREAM_ROUNDS).")
    ] = None,
    rank: Annotated[int | None, typer.Option(help="Rank of the new expert (default SLEEPD_SLEEP_RANK).")] = None,
    activate: Annotated[
        bool, typer.Option(help="Point the servers at the new version when it passes (needs Redis).")
    ] = True,
    redis_url: Annotated[str | None, typer.Option(help="Overrides SLEEPD_REDIS_URL; '' for none.")] = None,
    report: Annotated[Path | None, typer.Option(help="Write the full report as JSON here.")] = None,
) -> None:
    """Run one sleep offline: consolidate the sessions into a new adapter, gate it, publish it if it passes."""
    import dataclasses
    import json

    import redis
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from consolidation.from_settings import sleep_config
    from consolidation.sessions import load_jsonl
    from consolidation.sleep import run_sleep
    from sleepd.active_adapter import PointerConflict, read_active, write_active
    from sleepd.local_redis import redis_answers
    from sleepd.models import resolve_model
    from sleepd.registry import BASE, AdapterRegistry

    settings = _settings()
    logging.basicConfig(level=logging.WARNING)
    url = _redis_url(settings) if redis_url is None else redis_url
    use_redis = bool(url) and redis_answers(url)
    reg = AdapterRegistry(registry or settings.adapters_dir)
    if active is None:
        active = read_active(redis.Redis.from_url(url)) if use_redis else BASE
    records = load_jsonl(sessions)
    base = Path(resolve_model(settings.model, settings.models_dir))
    cfg = sleep_config(settings, rank=rank, steps=steps, dream_rounds=dream_rounds)
    with Progress(TextColumn("{task.description:<10}"), BarColumn(), TextColumn("{task.fields[info]}"),
                  TimeElapsedColumn(), console=console) as bar:  # fmt: skip
        task = bar.add_task("prepare", total=1.0, info="")

        def on_progress(phase: str, done: float, details: dict[str, Any]) -> None:
            info = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in details.items())
            bar.update(task, description=phase, completed=done, info=info)

        result = run_sleep(base, records, reg, active, cfg, progress=on_progress)
    summary = result.summary()
    summary["config"] = dataclasses.asdict(cfg)
    if report:
        report.write_text(json.dumps(summary, indent=2, default=str))
    gate = summary["gate"]
    if result.nothing_to_learn:
        console.print("[yellow]nothing to learn[/]: no session stated a name, number or date")
        raise typer.Exit(3)
    color = "green" if gate["passed"] else "red"
    console.print(f"[{color}]gate {'passed' if gate['passed'] else 'rejected'}[/]: recall "
                  f"{gate['recall_before']:.2f} -> {gate['recall_after']:.2f} on {gate['probes']} held-out "
                  f"question(s), anchor KL {gate['anchor_kl']:.4f} (vs base {gate['base_kl']:.4f}), "
                  f"anchors unchanged {gate['anchor_unchanged']:.0%}"
                  + (f", earlier probes kept {gate['stored_kept']}/{gate['stored_known']}" if gate.get("stored_known")
                     else ""))  # fmt: skip
    for reason in gate["reasons"]:
        console.print(f"  - {reason}")
    if result.published is None:
        raise typer.Exit(3)
    console.print(f"[green]published[/] {result.published.version} (parent {active}) into {reg.root}")
    if activate and use_redis:
        try:
            client = redis.Redis.from_url(url)
            write_active(client, result.published.version, expected=active, reason="sleepd consolidate")
        except PointerConflict as exc:
            console.print(f"[red]not activated[/]: {exc}")
            raise typer.Exit(4) from exc
        console.print(f"[green]active[/]: servers now switch to {result.published.version}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
