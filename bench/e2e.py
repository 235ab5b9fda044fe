"""The learning benchmark as a user meets it: over HTTP, against a running `sleepd up`.

Sessions of the procedural suite (bench/suite.py) are sent through the public chat API, turn by turn, so they
carry the served model's own replies; then one `POST /admin/sleep` (force) and the job is followed to its end;
then every probe is asked closed-book of the served model, in context (the session, then the probe as its
next turn), and closed-book of the base model (the admin API activates `base` for that, then the published
version again). Probes are sent only after the sleep and with `X-Sleepd-Learn: off`, so no probe reaches what
a sleep learns from. Scoring and intervals as bench/learning.py; the run fails if a probe equals or rewords a
question the published adapter's fact store says it was trained on.

    ./scripts/sleepd up &                     # the whole system, default model
    .venv/bin/python -m bench.e2e --seed 1 --facts 12 --out bench/results/e2e.json

With `--tenants`, the same run keeps two tenants apart (issue 15): API keys for tenants A and B are created
through the admin API; only A tells the facts and only A's sessions are consolidated (`"tenant"` in the sleep
request); every probe is then also asked with B's key. B must get exactly what the base model answers (B's
answers are compared with A's own base-model answers, taken with A's version switched to `base`), and its
recall must stay the base model's.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from openai import OpenAI

from bench.learning import RESULTS, ROOT, leaks, score
from bench.suite import generate

NO_LEARN = {"X-Sleepd-Learn": "off"}


def chat(client: OpenAI, messages: list[dict[str, str]], session: str, headers: dict[str, str], tokens: int) -> str:
    r = client.chat.completions.create(
        model="sleepd", messages=messages, max_tokens=tokens, temperature=0,  # type: ignore[arg-type]
        extra_headers={"X-Session-Id": session, **headers},
    )  # fmt: skip
    return r.choices[0].message.content or ""


def active_version(http: httpx.Client, key: str | None = None) -> str:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return str(http.get("/v1/models", headers=headers).json()["data"][0].get("sleepd_adapter", "base"))


def activate(http: httpx.Client, version: str, tenant: str | None = None, key: str | None = None,
             timeout: float = 120) -> None:  # fmt: skip
    http.post(f"/admin/adapters/{version}/activate", params={"tenant": tenant} if tenant else None).raise_for_status()
    deadline = time.monotonic() + timeout
    while active_version(http, key) != version:
        if time.monotonic() > deadline:
            raise TimeoutError(f"server did not switch to {version}")
        time.sleep(0.5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-url", default="http://127.0.0.1:8000")
    ap.add_argument("--admin-token", default=None, help="default: data/admin_token")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--facts", type=int, default=12)
    ap.add_argument("--reply-tokens", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--sleep-timeout-s", type=float, default=4 * 3600)
    ap.add_argument("--tenants", action="store_true", help="tenant A tells, tenant B must not recall")
    ap.add_argument("--probe-tenant", help="skip telling and sleeping: probe this tenant, taught by an earlier run")
    ap.add_argument("--out", type=Path, default=RESULTS / "e2e.json")
    args = ap.parse_args()
    token = args.admin_token or (ROOT / "data" / "admin_token").read_text().strip()
    http = httpx.Client(base_url=args.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=600)
    tenant: str | None = None
    key_a = key_b = "unused"
    if args.tenants or args.probe_tenant:
        run_tag = uuid.uuid4().hex[:6]
        tenant = args.probe_tenant or f"e2e-a-{run_tag}"
        key_a = http.post("/admin/keys", json={"tenant": tenant, "name": "e2e A"}).raise_for_status().json()["key"]
        key_b = http.post("/admin/keys", json={"tenant": f"e2e-b-{run_tag}", "name": "e2e B"}).raise_for_status(
        ).json()["key"]  # fmt: skip
    client = OpenAI(base_url=args.base_url + "/v1", api_key=key_a, max_retries=0, timeout=600)
    facts = generate(args.seed, args.facts)
    run = uuid.uuid4().hex[:6]
    result: dict[str, Any] = {"config": {k: str(v) for k, v in vars(args).items()}, "tenant": tenant}

    def tell(headers: dict[str, str]) -> list[list[dict[str, str]]]:
        convs: list[list[dict[str, str]]] = []
        for i, fact in enumerate(facts):
            conv: list[dict[str, str]] = []
            for turn in fact.turns:
                conv.append({"role": "user", "content": turn})
                conv.append({"role": "assistant", "content": chat(client, conv, f"e2e-{run}-{i}", headers,
                                                                  args.reply_tokens)})  # fmt: skip
            convs.append(conv)
        return convs

    if args.probe_tenant:
        # Probes only, of a tenant an earlier run taught: its sessions are told again with its version switched to
        # base (as they were first told: greedy, so the same replies) and with learning off, then probed as below.
        version = active_version(http, key_a)
        activate(http, "base", tenant, key_a)
        convs = tell(NO_LEARN)
        activate(http, version, tenant, key_a)
    else:
        t0 = time.perf_counter()
        convs = tell({})
        result["sessions_s"] = round(time.perf_counter() - t0, 1)
        time.sleep(2)  # the session log writes off the request path

        t0 = time.perf_counter()
        trigger: dict[str, Any] = {"force": True, **({"tenant": tenant} if tenant else {})}
        job = http.post("/admin/sleep", json=trigger).raise_for_status().json()["job_id"]
        while True:
            state = http.get(f"/admin/sleep/{job}").json()
            if state["state"] in ("published", "rejected", "failed", "skipped"):
                break
            if time.perf_counter() - t0 > args.sleep_timeout_s:
                raise TimeoutError(f"sleep {job} still {state['state']} after {args.sleep_timeout_s} s")
            time.sleep(10)
        result["sleep_s"] = round(time.perf_counter() - t0, 1)
        result["job"] = state
        print(json.dumps({"sleep": state["state"], "s": result["sleep_s"], "report": state.get("report")}, default=str))
        version = str((state.get("report") or {}).get("version") or "")
    result["sessions"] = convs

    items = [(f, p) for f in facts for p in f.probes]
    answers: dict[str, list[str]] = {}
    if version and version != "base":  # (--probe-tenant of a tenant on base: nothing published to check)
        activate(http, version, tenant, key_a)
        listing = http.get("/admin/adapters", params={"tenant": tenant} if tenant else None).json()["data"]
        meta = next(m for m in listing if m["version"] == version)
        trained = [q for f in meta["lineage"].get("facts", []) for q in f.get("questions", [])]
        result["leaks"] = leaks([p.question for _, p in items], trained)
    served = active_version(http, key_a if tenant else None)

    def closed_book(c: OpenAI) -> list[str]:
        return [chat(c, [{"role": "user", "content": p.question}], f"probe-{run}", NO_LEARN, args.max_new_tokens)
                for _, p in items]  # fmt: skip

    def in_context() -> list[str]:
        return [chat(client, [*convs[facts.index(f)], {"role": "user", "content": p.question}], f"probe-{run}",
                     NO_LEARN, args.max_new_tokens) for f, p in items]  # fmt: skip

    answers["after the sleep, served"] = closed_book(client)
    if served != "base":  # the session in context *and* the new version: what a user gets who pastes it again
        answers["in context, after the sleep"] = in_context()
    if tenant:
        other = OpenAI(base_url=args.base_url + "/v1", api_key=key_b, max_retries=0, timeout=600)
        answers["tenant B, closed-book"] = closed_book(other)
    if served != "base":
        activate(http, "base", tenant, key_a)
    answers["base, closed-book"] = closed_book(client)
    answers["in context (the bar)"] = in_context()  # the model before the sleep, with the session
    if served != "base":
        activate(http, served, tenant, key_a)
    if tenant:
        same = [b == a for b, a in zip(answers["tenant B, closed-book"], answers["base, closed-book"], strict=True)]
        result["tenant_b_same_as_base"] = f"{sum(same)}/{len(same)}"
        print(json.dumps({"tenant B answers identical to the base model's": result["tenant_b_same_as_base"]}))
    result["rows"] = {name: score(a, items) for name, a in answers.items()}
    for name, row in result["rows"].items():
        print(json.dumps({name: row["all"], "forward": row["forward"], "reverse": row["reverse"]}))
    result["answers"] = {n: list(zip([p.question for _, p in items], a, strict=True)) for n, a in answers.items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str))
    if result.get("leaks"):
        raise SystemExit(f"probe leak: {result['leaks'][:3]}")


if __name__ == "__main__":
    main()
