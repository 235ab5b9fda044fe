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


def active_version(http: httpx.Client) -> str:
    return str(http.get("/v1/models").json()["data"][0].get("sleepd_adapter", "base"))


def activate(http: httpx.Client, version: str, timeout: float = 120) -> None:
    http.post(f"/admin/adapters/{version}/activate").raise_for_status()
    deadline = time.monotonic() + timeout
    while active_version(http) != version:
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
    ap.add_argument("--out", type=Path, default=RESULTS / "e2e.json")
    args = ap.parse_args()
    token = args.admin_token or (ROOT / "data" / "admin_token").read_text().strip()
    http = httpx.Client(base_url=args.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=600)
    client = OpenAI(base_url=args.base_url + "/v1", api_key="unused", max_retries=0, timeout=600)
    facts = generate(args.seed, args.facts)
    run = uuid.uuid4().hex[:6]
    result: dict[str, Any] = {"config": {k: str(v) for k, v in vars(args).items()}}

    t0 = time.perf_counter()
    convs: list[list[dict[str, str]]] = []
    for i, fact in enumerate(facts):
        conv: list[dict[str, str]] = []
        for turn in fact.turns:
            conv.append({"role": "user", "content": turn})
            conv.append({"role": "assistant", "content": chat(client, conv, f"e2e-{run}-{i}", {}, args.reply_tokens)})
        convs.append(conv)
    result["sessions_s"] = round(time.perf_counter() - t0, 1)
    time.sleep(2)  # the session log writes off the request path

    t0 = time.perf_counter()
    job = http.post("/admin/sleep", json={"force": True}).raise_for_status().json()["job_id"]
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
    version = (state.get("report") or {}).get("version")

    items = [(f, p) for f in facts for p in f.probes]
    answers: dict[str, list[str]] = {}
    if version:
        activate(http, version)
        meta = next(m for m in http.get("/admin/adapters").json()["data"] if m["version"] == version)
        trained = [q for f in meta["lineage"].get("facts", []) for q in f.get("questions", [])]
        result["leaks"] = leaks([p.question for _, p in items], trained)
    served = active_version(http)
    answers["after the sleep, served"] = [
        chat(client, [{"role": "user", "content": p.question}], f"probe-{run}", NO_LEARN, args.max_new_tokens)
        for _, p in items
    ]
    answers["in context (the bar)"] = [
        chat(client, [*convs[facts.index(f)], {"role": "user", "content": p.question}], f"probe-{run}", NO_LEARN,
             args.max_new_tokens)
        for f, p in items
    ]  # fmt: skip
    if served != "base":
        activate(http, "base")
    answers["base, closed-book"] = [
        chat(client, [{"role": "user", "content": p.question}], f"probe-{run}", NO_LEARN, args.max_new_tokens)
        for _, p in items
    ]
    if served != "base":
        activate(http, served)
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
