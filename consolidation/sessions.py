"""What a sleep learns from: logged exchanges grouped into session memories.

Input is the server's `ExchangeRecord`s, from the Redis stream (via the worker) or a JSONL export of the same
schema. A memory is a session's final conversation (the last exchange's messages plus its reply), which holds
everything said in it: documents, corrections, task traces.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sleepd.records import ExchangeRecord


@dataclass(frozen=True)
class Memory:
    session_id: str
    transcript: list[dict[str, str]]
    record_ids: list[str] = field(default_factory=list)

    @property
    def user_turns(self) -> list[str]:
        return [m["content"] for m in self.transcript if m["role"] == "user" and m["content"].strip()]

    def render(self, max_chars: int | None = None) -> str:
        text = "\n".join(f"{m['role']}: {m['content']}" for m in self.transcript if m["role"] != "system")
        return text if max_chars is None else text[-max_chars:]

    def messages(self) -> list[str]:
        """The contents of the conversation's messages (system prompts left out, as render does)."""
        return [m["content"] for m in self.transcript if m["role"] != "system"]

    def said(self) -> str:
        """What was said, without the role labels: the text a teacher answer must be grounded in ("user" is
        a label here, not something the session told)."""
        return "\n".join(self.messages())

    def chunks(self, max_chars: int) -> list[Memory]:
        """Split a long session into consecutive pieces of whole messages (a message longer than the limit is
        its own piece), so each fits the teacher's context."""
        pieces: list[list[dict[str, str]]] = [[]]
        size = 0
        for m in self.transcript:
            n = len(m["content"])
            if pieces[-1] and size + n > max_chars:
                pieces.append([])
                size = 0
            pieces[-1].append(m)
            size += n
        return [Memory(f"{self.session_id}#{i}", p, self.record_ids) for i, p in enumerate(pieces) if p]


def load_jsonl(path: Path) -> list[ExchangeRecord]:
    with open(path, encoding="utf-8") as f:
        return [ExchangeRecord.model_validate_json(line) for line in f if line.strip()]


def memories(records: Iterable[ExchangeRecord], max_chars: int = 6000) -> list[Memory]:
    """Each conversation of each session, as the longest transcript its exchanges show. An exchange whose
    messages continue an earlier one's transcript extends that conversation; one that does not (a reused
    session id, an edited history) is a conversation of its own, so nothing said earlier is lost. Records
    logged with `learn` off (the client opted out) and failed exchanges are left out."""
    by_session: dict[str, list[ExchangeRecord]] = defaultdict(list)
    for r in records:
        if r.status != "error" and r.learn:
            by_session[r.session_id].append(r)
    out: list[Memory] = []
    for sid, recs in sorted(by_session.items()):
        recs.sort(key=lambda r: r.created_at)
        convs: list[tuple[list[dict[str, str]], list[str]]] = []  # (transcript, record ids)
        for r in recs:
            transcript = _transcript(r)
            for i, (known, ids) in enumerate(convs):
                if transcript[: len(known)] == known or known[: len(transcript)] == transcript:
                    convs[i] = (max(known, transcript, key=len), [*ids, r.record_id])
                    break
            else:
                convs.append((transcript, [r.record_id]))
        for k, (transcript, ids) in enumerate(convs):
            memory = Memory(sid if k == 0 else f"{sid}#c{k}", transcript, ids)
            out.extend(memory.chunks(max_chars) if len(memory.render()) > max_chars else [memory])
    return out


def _transcript(r: ExchangeRecord) -> list[dict[str, str]]:
    if r.endpoint == "chat" and r.messages is not None:
        transcript = [_message(m) for m in r.messages]
    else:
        transcript = [{"role": "user", "content": str(r.prompt or "")}]
    if r.response_text:
        transcript.append({"role": "assistant", "content": r.response_text})
    return [m for m in transcript if m["content"]]


def _message(m: dict[str, Any]) -> dict[str, str]:
    content = m.get("content", "")
    if isinstance(content, list):  # OpenAI content parts: keep the text ones
        content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return {"role": str(m.get("role", "user")), "content": str(content or "")}
