"""The `sleepd` command line: `up` runs the whole system, `serve` the API alone."""

from __future__ import annotations

import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from sleepd.config import Settings

app = typer.Typer(help="sleepd: LLM serving that keeps learning.", no_args_is_help=True)
model_app = typer.Typer(help="The served model.", no_args_is_help=True)
app.add_typer(model_app, name="model")
console = Console(stderr=True)


def _settings() -> Settings:
    return Settings()


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Overrides SLEEPD_HOST.")] = None,
    port: Annotated[int | None, typer.Option(help="Overrides SLEEPD_PORT.")] = None,
) -> None:
    """Run the API server (OpenAI-compatible, vLLM engine in-process)."""
    import uvicorn

    from app.main import create_app

    settings = _settings()
    if host:
        settings.host = host
    if port:
        settings.port = port
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="info",
        timeout_graceful_shutdown=30,
    )


@app.command()
def up() -> None:
    """Run the whole system: a local Redis if none answers, then the API server (until Ctrl-C)."""
    from sleepd.local_redis import redis_answers, start_redis

    settings = _settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if settings.admin_token is None:
        env["SLEEPD_ADMIN_TOKEN"] = _admin_token(settings.data_dir)
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    if redis_answers(settings.redis_url):
        console.print(f"[green]redis[/] answering at {settings.redis_url}")
    else:
        console.print(f"[yellow]redis[/] not answering at {settings.redis_url}: starting a local one (AOF on)")
        children.append(("redis", start_redis(settings.redis_url, settings.redis_dir)))
    children.append(("api", subprocess.Popen([sys.executable, "-m", "sleepd.cli", "serve"], env=env)))
    console.print(
        f"[green]sleepd[/] API on http://{settings.host}:{settings.port}/v1 (model '{settings.served_model_name}'); "
        f"admin token in {settings.data_dir / 'admin_token'}"
    )
    _supervise(children)


def _supervise(children: list[tuple[str, subprocess.Popen[bytes]]]) -> None:
    """Wait until a child exits or we are told to stop; then stop the rest, newest first."""
    stopping = False

    def _stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    code = 0
    while not stopping:
        for name, proc in children:
            if proc.poll() is not None:
                console.print(f"[red]{name}[/] exited with {proc.returncode}; stopping")
                code = proc.returncode or 1
                stopping = True
        time.sleep(0.2)
    for _, proc in reversed(children):
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.kill()
    raise typer.Exit(code)


def _admin_token(data_dir: Path) -> str:
    """The admin token `up` uses when SLEEPD_ADMIN_TOKEN is unset: made once, kept private in the data dir."""
    path = data_dir / "admin_token"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32))
    return path.read_text().strip()


@model_app.command("prepare")
def model_prepare() -> None:
    """Make the served model ready (converts the bundled default model once) and print its folder."""
    from sleepd.models import resolve_model

    settings = _settings()
    logging.basicConfig(level=logging.INFO)
    print(resolve_model(settings.model, settings.models_dir))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
