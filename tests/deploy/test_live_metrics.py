"""Every Grafana panel query and every alert rule expression, evaluated by a real Prometheus against a live sleepd.

A Prometheus (Debian's `prometheus` binary) scrapes the test server's /metrics every second and loads
deploy/prometheus/alerts.yml. The test drives the system: chats (streamed and not, and a refused one), an adapter
published into the server's registry and activated (served by a LoRA, then merged into the weights), a corrupt
version refused, a tiny real sleep through a real Celery worker (the relaxed gate of tests/worker/test_sleep_ops.py)
and the scheduler's decision (`sleepd.window.decide` + `publish_decision`, what the beat task does). Then every
panel query of every generated dashboard (deploy/grafana/dashboards.py `generate()`) and every rule's `expr` goes
through Prometheus's /api/v1/query; the test fails listing each one that returns no series, or only NaN.

Substitutions: Grafana's `$__rate_interval` (the dashboards' RATE) and its other variables are not PromQL; they
are replaced by one window covering everything the test drove (from Prometheus's start to the query), so each
rate() sees every observation. Fixed windows written in a query (`[10m]`, `[24h]`) stay as written.

Queries that are empty by design in a healthy system are not skipped:
- driven into their state and evaluated while it holds: the panels "Current phase" and "Sleep lock holder" and
  the alert SleepLockHeldTooLong's expression (the `for: 3h10m` is the rule's, not the expression's) are
  evaluated while the sleep cycle runs (polled until each returned data, failing if the cycle ended first);
  "Why the window is closed" by the scheduler's decision after the chats (traffic, few pending tokens);
  "Since last publish" after the published sleep; AdapterRejected after the corrupt version was refused.
- the alerts in QUIET (a single healthy server cannot disagree with itself, a spool with Redis up, ...) are
  checked twice: the whole expression must return nothing (the alert does not fire on a healthy system), and each
  operand under the top-level comparisons, set operators (`and`, `or`, `unless`), `absent()` and `label_replace()`
  must return series (the metrics it watches are there; see `operands`).

Not checked: that a driven counter's panel shows the event. A labelled counter is born at 1 by its first
increment, so `increase()`/`rate()` read 0 for the first swap, rejection or merge of each outcome after a server
starts (the series exists, the test passes); deploy/prometheus/alerts.yml's AdapterRejected allows for it.
"""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import promql_parser
import pytest
import redis
import yaml
from openai import OpenAI

from sleepd.config import Settings
from sleepd.testing import build_random_lora
from sleepd.window import decide, publish_decision
from tests.conftest import CACHE, ROOT, RedisServer, Server, free_port, start_server
from tests.worker.test_sleep_ops import admin, start_worker, stop, wait_job

PROMETHEUS = shutil.which("prometheus")
pytestmark = [
    pytest.mark.skipif(
        PROMETHEUS is None, reason="no `prometheus` binary (Debian package 'prometheus'; scripts/test installs it)"
    ),
    pytest.mark.slow,  # a real sleep inside: 100 s (5.5 min under load) on 2 cores, past ~90 s (run with -m slow)
]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
GRAFANA_VARS = ("$__rate_interval", "$__interval", "$__range")

# Alerts that must stay quiet on one healthy server: why, per alert. Their operands are checked instead.
QUIET = {
    "ServersDisagreeOnActiveVersion": "one server serves one version",
    "AdapterSkew": "the server serves the pointer's version",
    "SessionSpoolGrowing": "Redis is up, nothing is spooled",
    "RedisDown": "Redis is up",
    "SleepNotPublished": "a sleep was just published",
    "RepeatedGateRejections": "the gate passed",
    "SleepWorkerAbsent": "a worker runs",
    "EngineNotReady": "the engine is ready",
    "SleepdTargetDown": "the target is scraped",
    "SleepdMetricsAbsent": "the server reports",
    "SleepdMetricMissing": "the server exports every sleep metric",
}
# Queries (dashboard panel titles, alert names) that hold only while a sleep cycle runs.
DURING_SLEEP = {"Current phase", "Sleep lock holder", "SleepLockHeldTooLong"}
_COMPARISONS = {"==", "!=", ">", "<", ">=", "<="}
_SET_OPS = {"and", "or", "unless"}


@dataclass
class Prometheus:
    url: str
    proc: subprocess.Popen[bytes]
    started: float
    log_path: Path

    def query(self, expr: str) -> list[dict[str, Any]]:
        r = httpx.get(self.url + "/api/v1/query", params={"query": expr}, timeout=30)
        body = r.json()
        assert r.status_code == 200 and body["status"] == "success", f"{expr}: {r.text}"
        result = body["data"]["result"]
        if body["data"]["resultType"] == "scalar":
            return [{"metric": {}, "value": result}]
        return result  # type: ignore[no-any-return]

    def window(self) -> str:
        """A range that covers everything since Prometheus started (what the test drove)."""
        return f"{int(time.time() - self.started) + 5}s"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_prometheus(target: str, root: Path, flower: str) -> Prometheus:
    """Prometheus scraping `target` (host:port) and `flower` every second, with sleepd's alert rules loaded;
    returns once it has scraped both."""
    assert PROMETHEUS
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [
            {"job_name": "sleepd", "static_configs": [{"targets": [target]}]},  # the rules select it
            {"job_name": "flower", "static_configs": [{"targets": [flower]}]},
        ],
    }
    (root / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log_path = root / "prometheus.log"
    proc = subprocess.Popen(
        [PROMETHEUS, f"--config.file={root / 'prometheus.yml'}", f"--storage.tsdb.path={root / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=open(log_path, "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115 - the child writes to it
    )  # fmt: skip
    prom = Prometheus(f"http://127.0.0.1:{port}", proc, time.time(), log_path)
    try:
        wait_for(lambda: _up(prom), "Prometheus to scrape the server", 60, lambda: log_path.read_text()[-3000:])
    except BaseException:
        prom.stop()
        raise
    return prom


@pytest.fixture(scope="module")
def server(tiny_model: Path, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of this test's own on Redis database 7: the test creates an API key (the tenant panels), and once a
    key exists `/v1` stays keyed for every server on that Redis database."""
    url = redis_server.url.rsplit("/", 1)[0] + "/7"
    redis.Redis.from_url(url).flushdb()
    srv = start_server(str(tiny_model), url, tmp_path_factory.mktemp("live"), SLEEPD_API_KEY_REFRESH_S="0.5")
    yield srv
    srv.stop()


@pytest.fixture()
def flower(server: Server, tmp_path: Path) -> Iterator[str]:
    """`sleepd flower` (Celery's monitor) on the server's Redis: its /metrics carries Celery's worker and task
    metrics. Returns host:port."""
    port = free_port()
    log = open(tmp_path / "flower.log", "wb")  # noqa: SIM115 - the child writes to it for its whole life
    proc = subprocess.Popen([sys.executable, "-m", "cli", "flower", "--port", str(port)], env=server.env, cwd=ROOT,
                            stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        wait_for(lambda: _answers(f"http://127.0.0.1:{port}/metrics"), "Flower", 60,
                 lambda: (tmp_path / "flower.log").read_text()[-3000:])  # fmt: skip
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture()
def prometheus(server: Server, flower: str, tmp_path: Path) -> Iterator[Prometheus]:
    prom = start_prometheus(server.base_url.removeprefix("http://"), tmp_path, flower)
    yield prom
    prom.stop()


def _up(prom: Prometheus) -> bool:
    assert prom.proc.poll() is None, prom.log_path.read_text()[-3000:]
    try:
        return sorted(s["value"][1] for s in prom.query('up{job=~"sleepd|flower"}')) == ["1", "1"]
    except (httpx.HTTPError, ValueError, AssertionError):
        return False


def wait_for(check: Callable[[], bool], what: str, timeout_s: float, detail: Callable[[], str] = str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}\n{detail()}"
        time.sleep(0.2)


def dashboard_queries() -> list[tuple[str, str]]:
    """(dashboard / panel title, expr) for every target of every generated dashboard."""
    spec = importlib.util.spec_from_file_location("sleepd_dashboards", ROOT / "deploy" / "grafana" / "dashboards.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return [
        (f"{board['title']} / {panel['title']}", target["expr"])
        for board in (json.loads(text) for text in module.generate().values())
        for panel in board["panels"]
        for target in panel.get("targets", [])
    ]


def alert_rules() -> list[tuple[str, str]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [(rule["alert"], rule["expr"]) for group in groups for rule in group["rules"]]


def operands(expr: str) -> list[str]:
    """The expressions under `expr`'s top-level filters: comparisons (not `bool`) keep their vector sides, set
    operators both sides, `absent()` and `label_replace()` their vector argument. `x > 0 and y` -> [x, y]."""

    def visit(node: Any) -> list[Any]:
        if isinstance(node, promql_parser.ParenExpr):
            return visit(node.expr)
        if isinstance(node, promql_parser.BinaryExpr):
            op = str(node.op)
            if op in _SET_OPS or (op in _COMPARISONS and not (node.modifier and node.modifier.return_bool)):
                return [part for side in (node.lhs, node.rhs) if not _scalar(side) for part in visit(side)]
        if isinstance(node, promql_parser.Call) and node.func.name in ("absent", "label_replace"):
            return visit(node.args[0])
        return [node]

    return [str(node) for node in visit(promql_parser.parse(expr))]


def _scalar(node: Any) -> bool:
    return isinstance(node, promql_parser.NumberLiteral) or (
        isinstance(node, promql_parser.BinaryExpr) and _scalar(node.lhs) and _scalar(node.rhs)
    )


def has_data(result: list[dict[str, Any]]) -> bool:
    return any(not math.isnan(float(series["value"][1])) for series in result)


def chat(server: Server, stream: bool, n: int = 2) -> None:
    with OpenAI(base_url=server.api, api_key="x", max_retries=0, timeout=120) as client:
        for i in range(n):
            messages: Any = [{"role": "user", "content": f"Remember: locker {i} holds the red kite."}]
            if stream:
                for _ in client.chat.completions.create(model="sleepd", messages=messages, max_tokens=6, stream=True):
                    pass
            else:
                client.chat.completions.create(model="sleepd", messages=messages, max_tokens=6)
            time.sleep(1.2)  # a labelled series is born at its first observation: a later scrape sees it move


def keyed_requests(server: Server) -> None:
    """A tenant's key and its requests (the tenant panels), and requests with a key nobody issued (401s). Last:
    from the first key on, `/v1` refuses requests without one."""
    r = admin(server, "POST", "/admin/keys", json={"tenant": "live", "name": "live metrics"})
    assert r.status_code == 200, r.text
    # The first key switches the server to per-tenant serving: while the engine reloads its base weights (the
    # default tenant's version was merged), /v1 answers 503 "retry shortly", which the client does.
    with OpenAI(base_url=server.api, api_key=r.json()["key"], max_retries=10, timeout=120) as client:
        for i in range(2):
            client.chat.completions.create(model="sleepd", messages=[{"role": "user", "content": f"hi {i}"}],
                                           max_tokens=4)  # fmt: skip
            time.sleep(1.2)
    for _ in range(2):
        r = httpx.post(server.api + "/chat/completions", headers={"Authorization": "Bearer sk-nobody"},
                       json={"model": "sleepd", "messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
        assert r.status_code == 401, r.text
        time.sleep(1.2)


def scheduler_decides(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the beat task `worker.tasks.maybe_sleep` does before it would enqueue, with the server's settings."""
    for name, value in server.env.items():
        if name.startswith("SLEEPD_"):
            monkeypatch.setenv(name, value)
    settings = Settings()
    client = redis.Redis.from_url(settings.redis_url)
    try:
        publish_decision(client, decide(client, settings))
    finally:
        client.close()


def adapter_state(server: Server) -> dict[str, Any]:
    r = admin(server, "GET", "/admin/adapters")
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def swap_and_refuse(server: Server, tiny_model: Path) -> None:
    """Publish a random LoRA, activate it, wait until it is merged; then a corrupted version is refused."""
    source = build_random_lora(tiny_model, CACHE / "adapters" / "tiny-one", seed=1)
    r = admin(server, "POST", "/admin/adapters", json={"path": str(source)})
    assert r.status_code == 200, r.text
    version = r.json()["version"]
    assert admin(server, "POST", f"/admin/adapters/{version}/activate").status_code == 200
    wait_for(lambda: adapter_state(server)["weights"] == version, f"{version} merged", 120)
    chat(server, stream=True)  # on the merged weights

    r = admin(server, "POST", "/admin/adapters", json={"path": str(source)})
    bad = r.json()["version"]
    weights = server.data_dir / "adapters" / bad / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-64] + b"\0" * 64)  # bit rot after publishing
    r = admin(server, "POST", f"/admin/adapters/{bad}/activate")
    assert r.status_code == 400 and "hash" in r.text, r.text


def sleep_while_querying(server: Server, prom: Prometheus, during: list[tuple[str, str]]) -> dict[str, str]:
    """Run a tiny sleep (a worker must be running); while it runs, evaluate `during` until each returned data.
    Returns the queries that never did (name -> why)."""
    r = admin(server, "POST", "/admin/sleep", json={"force": True, "steps": 2, "dream_rounds": 0, "rank": 4})
    assert r.status_code == 200, r.text
    job_id = r.json()["job_id"]
    left = dict(during)
    while left and admin(server, "GET", f"/admin/sleep/{job_id}").json()["state"] in ("queued", "running"):
        for name, expr in list(left.items()):
            if has_data(prom.query(expr)):
                del left[name]
        time.sleep(0.3)
    job = wait_job(server, job_id, timeout_s=900)  # a tiny sleep takes 1-5 min on a busy 2-core machine
    assert job["state"] == "published", job
    version = job["report"]["version"]
    wait_for(lambda: adapter_state(server)["serving"] == version, f"the server to serve {version}", 60)
    return {name: f"no data while the cycle ran: {expr}" for name, expr in left.items()}


@pytest.mark.timeout(1800)  # the default 600 s is too short for a sleep on a busy CPU
def test_every_dashboard_query_and_alert_returns_data_from_a_live_prometheus(
    server: Server, prometheus: Prometheus, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    panels = dashboard_queries()
    rules = alert_rules()
    assert set(QUIET) <= {name for name, _ in rules}, "QUIET names an alert that alerts.yml does not have"
    assert DURING_SLEEP <= {title.split(" / ")[-1] for title, _ in panels} | {name for name, _ in rules}
    during = [(name, expr) for name, expr in panels + rules if name.split(" / ")[-1] in DURING_SLEEP]

    with ThreadPoolExecutor(1) as pool:
        worker = pool.submit(start_worker, server, tmp_path / "worker.log")  # starts while the server is driven
        try:
            chat(server, stream=False)
            chat(server, stream=True)
            for _ in range(2):  # refused requests (the Errors panel)
                r = httpx.post(server.api + "/chat/completions", json={"model": "nope", "messages": []})
                assert r.status_code >= 400
                time.sleep(1.2)
            scheduler_decides(server, monkeypatch)
            swap_and_refuse(server, tiny_model)
            worker.result()
            problems = sleep_while_querying(server, prometheus, during)
        finally:
            stop(worker.result())
    chat(server, stream=False)
    scheduler_decides(server, monkeypatch)  # after the sleep: the window is closed (traffic, tokens pending)
    keyed_requests(server)
    time.sleep(3)  # a few scrapes of the final state

    window = prometheus.window()
    for name, expr in panels + rules:
        for var in GRAFANA_VARS:
            expr = expr.replace(var, window)
        short = name.split(" / ")[-1]
        if short in DURING_SLEEP:
            continue
        if short in QUIET:
            if prometheus.query(expr):
                problems[name] = f"fires on a healthy system ({QUIET[short]}): {expr}"
            for part in operands(expr):
                if not has_data(prometheus.query(part)):
                    problems[name] = f"operand without data: {part}"
            continue
        if not has_data(prometheus.query(expr)):
            problems[name] = f"no data: {expr}"
    assert not problems, "\n".join(f"{name}: {why}" for name, why in problems.items())
