"""Exchange records always serialise: a lone surrogate in any field (legal in JSON) cannot stop the log."""

from __future__ import annotations

import json

from sleepd.records import ExchangeRecord, LoggedChoice


def test_lone_surrogates_become_replacement_characters_and_pairs_survive() -> None:
    rec = ExchangeRecord(
        session_id="s",
        endpoint="chat",
        model="m",
        messages=[{"role": "user", "name": "\udfff", "content": "smile \ud83d\ude00 and \ud800 alone"}],
        params={"stop": ["\udc00"]},
        choices=[LoggedChoice(text="x\ud800")],
    )
    data = json.loads(rec.model_dump_json())
    assert data["messages"][0]["name"] == "\ufffd"
    assert data["messages"][0]["content"] == "smile \U0001f600 and \ufffd alone"
    assert data["params"]["stop"] == ["\ufffd"]
    assert data["choices"][0]["text"] == "x\ufffd"
    assert ExchangeRecord.model_validate_json(rec.model_dump_json()) == rec
