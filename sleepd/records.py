"""The typed record of one logged exchange: what the server writes and what the sleep cycle reads.

Pure data (pydantic), no Redis: `consolidation/` reads these from JSONL exports as well as from the stream.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

SCHEMA_VERSION = 1


def new_record_id() -> str:
    return uuid.uuid4().hex


def valid_text(value: Any) -> Any:
    """`value` with every string made encodable as UTF-8: a lone surrogate (legal in a JSON request,
    e.g. "\\udfff") becomes U+FFFD. Without this one such request would make its record unserialisable."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
            return value
        except UnicodeEncodeError:
            # utf-16 with surrogatepass joins valid pairs; what stays lone decodes as U+FFFD.
            return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, dict):
        return {valid_text(k): valid_text(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [valid_text(v) for v in value]
    return value


class LoggedChoice(BaseModel):
    index: int = 0
    text: str = ""
    finish_reason: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _encodable(cls, data: Any) -> Any:
        return valid_text(data) if isinstance(data, dict) else data


class ExchangeRecord(BaseModel):
    """One request/response exchange inside a session."""

    schema_version: int = SCHEMA_VERSION
    record_id: str = Field(default_factory=new_record_id)
    session_id: str
    # Whose memory this exchange belongs to (the API key's tenant); "default" without API keys.
    tenant: str = "default"
    request_id: str | None = None
    endpoint: Literal["chat", "completion"]
    model: str
    adapter: str = "base"
    # Chat: the full request messages as sent. Completion: the prompt.
    messages: list[dict[str, Any]] | None = None
    prompt: str | list[Any] | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    choices: list[LoggedChoice] = Field(default_factory=list)
    status: Literal["ok", "cancelled", "error"] = "ok"
    # False: logged for audit only, never consolidated (the client sent `X-Sleepd-Learn: off`).
    learn: bool = True
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_ms: float | None = None
    ttft_ms: float | None = None
    created_at: float = Field(default_factory=time.time)

    @model_validator(mode="before")
    @classmethod
    def _encodable(cls, data: Any) -> Any:
        return valid_text(data) if isinstance(data, dict) else data

    @property
    def response_text(self) -> str:
        return self.choices[0].text if self.choices else ""

    @property
    def finish_reason(self) -> str | None:
        return self.choices[0].finish_reason if self.choices else None
