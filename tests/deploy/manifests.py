"""What the deploy files may name, read from the code: the CLI's commands, the settings' environment variables,
the HTTP paths of the health routes."""

from __future__ import annotations

import re
from functools import cache

import typer

from cli.main import app as cli_app
from sleepd.config import Settings
from tests.deploy.promql import ROOT


@cache
def cli_commands() -> frozenset[str]:
    return frozenset(typer.main.get_command(cli_app).commands)  # type: ignore[attr-defined]


@cache
def setting_env_names() -> frozenset[str]:
    prefix = str(Settings.model_config.get("env_prefix", ""))
    return frozenset(f"{prefix}{name}".upper() for name in Settings.model_fields)


@cache
def health_paths() -> frozenset[str]:
    text = (ROOT / "app" / "routes" / "health.py").read_text()
    return frozenset(re.findall(r'@router\.get\("([^"]+)"\)', text))


def unknown_settings(env: dict[str, object] | list[str]) -> list[str]:
    names = env if isinstance(env, list) else list(env)
    return [n for n in names if n.startswith("SLEEPD_") and n not in setting_env_names()]
