"""Turns one API exchange (request + response, streamed or not) into an `ExchangeRecord` for the session log.

Streams are relayed chunk by chunk; the relay reads each SSE event to collect the text, finish reasons,
first-token time and usage, and submits the record when the stream ends, however it ends (done, error,
client gone). To always know token counts, usage is requested from vLLM even when the client did not ask;
that extra final chunk is then not forwarded, so the client sees exactly what it asked for.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

from app import metrics
from app.session_log import SessionLogWriter
from sleepd.records import ExchangeRecord, LoggedChoice

_PARAMS = (
    "temperature", "top_p", "max_tokens", "max_completion_tokens", "n", "stop", "seed", "logprobs",
    "top_logprobs", "presence_penalty", "frequency_penalty",
)  # fmt: skip


class ExchangeCapture:
    def __init__(
        self,
        writer: SessionLogWriter,
        *,
        endpoint: Literal["chat", "completion"],
        session_id: str,
        model: str,
        adapter: str,
        request: Any,
        request_id: str | None,
        learn: bool = True,
        tenant: str = "default",
        keep: bool = True,
    ) -> None:
        self.writer = writer
        self.keep = keep  # False: the key's policy drops exchanges that must not be learned (never logged)
        self.endpoint = endpoint
        self.start = time.perf_counter()
        self.texts: dict[int, list[str]] = {}
        self.finish: dict[int, str | None] = {}
        self.usage: dict[str, Any] | None = None
        self.ttft_ms: float | None = None
        self.saw_error = False
        params = {k: getattr(request, k, None) for k in _PARAMS}
        self.record = ExchangeRecord(
            session_id=session_id,
            request_id=request_id,
            endpoint=endpoint,
            model=model,
            adapter=adapter,
            messages=_jsonable(request.messages) if endpoint == "chat" else None,
            prompt=_jsonable(request.prompt) if endpoint == "completion" else None,
            params={k: v for k, v in params.items() if v is not None},
            learn=learn,
            tenant=tenant,
        )

    def finish_response(self, response: Any) -> None:
        """A complete (non-streamed) response object from vLLM."""
        for choice in response.choices:
            text = choice.message.content if self.endpoint == "chat" else choice.text
            self.texts[choice.index] = [text or ""]
            self.finish[choice.index] = choice.finish_reason
        self.usage = response.usage.model_dump() if response.usage else None
        self._submit("ok")

    async def relay(self, stream: AsyncIterator[str], *, forward_usage: bool) -> AsyncIterator[str]:
        status: Literal["ok", "cancelled", "error"] = "cancelled"  # kept if the client goes away mid-stream
        try:
            async for chunk in stream:
                if self._observe(chunk) == "usage-only" and not forward_usage:
                    continue
                yield chunk
            status = "error" if self.saw_error else "ok"
        except Exception:
            status = "error"
            raise
        finally:
            self._submit(status)

    def _observe(self, chunk: str) -> str | None:
        if not chunk.startswith("data: {"):
            return None
        try:
            event = json.loads(chunk[6:])
        except ValueError:
            return None
        if "error" in event:
            self.saw_error = True
            return None
        for choice in event.get("choices") or []:
            idx = choice.get("index", 0)
            piece = (choice.get("delta") or {}).get("content") if self.endpoint == "chat" else choice.get("text")
            if piece:
                if self.ttft_ms is None:
                    self.ttft_ms = (time.perf_counter() - self.start) * 1000
                    metrics.LATENCY_BY_VERSION.observe(metrics.TTFT, self.endpoint, self.record.adapter,
                                                       self.ttft_ms / 1000)  # fmt: skip
                self.texts.setdefault(idx, []).append(piece)
            if choice.get("finish_reason") is not None:
                self.finish[idx] = choice["finish_reason"]
        if event.get("usage"):
            self.usage = event["usage"]
            if not event.get("choices"):
                return "usage-only"
        return None

    def _submit(self, status: Literal["ok", "cancelled", "error"]) -> None:
        rec = self.record
        rec.status = status
        rec.latency_ms = (time.perf_counter() - self.start) * 1000
        rec.ttft_ms = self.ttft_ms
        indexes = sorted(set(self.texts) | set(self.finish))
        rec.choices = [
            LoggedChoice(index=i, text="".join(self.texts.get(i, [])), finish_reason=self.finish.get(i))
            for i in indexes
        ]
        if self.usage:
            rec.prompt_tokens = self.usage.get("prompt_tokens")
            rec.completion_tokens = self.usage.get("completion_tokens")
            metrics.TOKENS.labels("prompt").inc(rec.prompt_tokens or 0)
            metrics.TOKENS.labels("completion").inc(rec.completion_tokens or 0)
        if self.keep:
            self.writer.submit(rec)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(exclude_none=True)
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value
