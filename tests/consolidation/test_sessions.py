"""Session records become memories: grouped by session, final conversation kept, long ones chunked."""

from __future__ import annotations

from consolidation.sessions import Memory, memories
from sleepd.records import ExchangeRecord, LoggedChoice


def rec(session: str, messages: list[dict[str, str]], reply: str, t: float, status: str = "ok") -> ExchangeRecord:
    return ExchangeRecord(
        session_id=session, endpoint="chat", model="m", messages=messages,
        choices=[LoggedChoice(text=reply)], created_at=t, status=status,  # type: ignore[arg-type]
    )  # fmt: skip


def test_memories_keep_the_final_conversation() -> None:
    first = [{"role": "user", "content": "My dog is Rex."}]
    second = [*first, {"role": "assistant", "content": "Nice!"}, {"role": "user", "content": "He is 4."}]
    mems = memories([rec("a", second, "Got it.", 2), rec("a", first, "Nice!", 1), rec("b", first, "x", 1, "error")])
    assert [m.session_id for m in mems] == ["a"]
    assert [t["content"] for t in mems[0].transcript] == ["My dog is Rex.", "Nice!", "He is 4.", "Got it."]
    assert mems[0].user_turns == ["My dog is Rex.", "He is 4."]
    assert len(mems[0].record_ids) == 2


def test_long_sessions_are_chunked_on_message_boundaries() -> None:
    msgs = [{"role": "user", "content": f"fact {i} " + "x" * 50} for i in range(10)]
    mems = memories([rec("long", msgs, "ok", 1)], max_chars=200)
    assert len(mems) > 1
    assert sum(len(m.transcript) for m in mems) == 11
    assert all(len(m.render()) <= 200 + 80 for m in mems)


def test_what_was_said_leaves_out_role_labels() -> None:
    memory = Memory(
        "s1", [{"role": "user", "content": "The otter is Fizz."}, {"role": "assistant", "content": "Noted."}]
    )
    assert memory.said() == "The otter is Fizz.\nNoted."
    assert "user" in memory.render()


def test_a_reused_session_id_keeps_every_conversation() -> None:
    one = [{"role": "user", "content": "The vault code is 4471."}]
    other = [{"role": "user", "content": "My cat is Miso."}]
    mems = memories([rec("my-session", one, "Noted.", 1), rec("my-session", other, "Cute!", 2)])
    assert [[t["content"] for t in m.transcript] for m in mems] == [
        ["The vault code is 4471.", "Noted."],
        ["My cat is Miso.", "Cute!"],
    ]
    assert [m.session_id.split("#")[0] for m in mems] == ["my-session", "my-session"]


def test_exchanges_logged_with_learning_off_are_not_consolidated() -> None:
    secret = rec("a", [{"role": "user", "content": "The code is 4471."}], "ok", 1)
    secret.learn = False
    assert memories([secret, rec("b", [{"role": "user", "content": "Hi"}], "Hello", 1)])[0].session_id == "b"
    assert len(memories([secret])) == 0
