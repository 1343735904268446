"""The deployment files run as written, as far as can be checked without Docker: the compose file
is valid under the Compose Specification's JSON Schema, every LEDGER_* variable they set is a
setting the ledger reads, images are pinned, secrets come from the env file, and every long-running
service has a healthcheck."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from ledger.config import Settings

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
COMPOSE_FILE = INFRA / "docker-compose.yml"
ENV_EXAMPLE = INFRA / "ledger.env.example"
DOCKERFILE = INFRA / "Dockerfile"
LOCK_FILE = ROOT / "requirements.lock"
SCHEMA = Path(__file__).with_name("compose-spec.schema.json")
ONE_SHOT_SERVICES = {"kafka-topics"}  # runs once and exits: nothing to check the health of
SECRET_WORDS = ("PASSWORD", "SECRET", "TOKEN", "API_KEY", "SIGNING_KEY", "DATABASE_URL")


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())  # merges the <<: anchors
    return loaded


def _environment(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in environment)
    return {str(name): str(value) for name, value in environment.items()}


def _env_file_names(text: str) -> set[str]:
    """The variables of an env file, those commented out as examples included."""
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", text, flags=re.MULTILINE))


def _dockerfile_env_names(text: str) -> set[str]:
    joined = re.sub(r"\\\n", " ", text)
    names: set[str] = set()
    for line in joined.splitlines():
        if line.strip().upper().startswith("ENV "):
            names |= set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", line))
    return names


def _known_variables() -> set[str]:
    prefix = str(Settings.model_config.get("env_prefix", "")).upper()
    return {f"{prefix}{name.upper()}" for name in Settings.model_fields}


def test_the_compose_file_is_valid_under_the_compose_specification() -> None:
    schema = json.loads(SCHEMA.read_text())
    validator_class = jsonschema.validators.validator_for(schema)  # the draft the file declares
    validator_class.check_schema(schema)
    errors = sorted(validator_class(schema).iter_errors(_compose()), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)


def test_every_ledger_variable_set_is_a_setting() -> None:
    compose = _compose()
    set_by = {
        "infra/docker-compose.yml": {
            name for service in compose["services"].values() for name in _environment(service)
        },
        "infra/ledger.env.example": _env_file_names(ENV_EXAMPLE.read_text()),
        "infra/Dockerfile": _dockerfile_env_names(DOCKERFILE.read_text()),
    }
    known = _known_variables()
    unknown = {
        where: sorted(name for name in names if name.startswith("LEDGER_") and name not in known)
        for where, names in set_by.items()
    }
    assert unknown == {where: [] for where in set_by}
    assert any(name.startswith("LEDGER_") for names in set_by.values() for name in names)


def test_images_are_pinned_and_secrets_come_from_the_env_file() -> None:
    services = _compose()["services"]
    for name, service in services.items():
        if "image" in service:
            image = service["image"]
            assert re.search(r":[^:/]*\d", image) and not image.endswith(":latest"), f"{name}: {image}"
        for variable, value in _environment(service).items():
            if any(word in variable for word in SECRET_WORDS):
                raise AssertionError(f"{name}: {variable}={value!r} is written inline; use ledger.env")
    assert services["postgres"]["image"].startswith("postgres:18")
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft
    for name in ("postgres", "api", "consumer", "adapters"):
        assert services[name]["env_file"] == "ledger.env", name
    assert {"api", "consumer", "adapters"} <= set(services)
    # The env file itself is the operator's: never committed.
    assert "/infra/ledger.env" in (ROOT / ".gitignore").read_text().splitlines()


def test_every_long_running_service_has_a_healthcheck() -> None:
    services = _compose()["services"]
    missing = [
        name
        for name, service in services.items()
        if name not in ONE_SHOT_SERVICES and "healthcheck" not in service
    ]
    assert missing == []


def test_the_image_installs_from_the_lock_file_and_its_user_owns_the_data_path() -> None:
    dockerfile = DOCKERFILE.read_text()
    base = re.search(r"^FROM (\S+)", dockerfile, flags=re.MULTILINE)
    assert base and re.fullmatch(r"python:\d+\.\d+\.\d+-\S+", base.group(1)), base
    assert "pip install --no-deps -r requirements.lock" in dockerfile
    pins = [line for line in LOCK_FILE.read_text().splitlines() if line and not line.startswith("#")]
    assert pins and all(re.fullmatch(r"[A-Za-z0-9_.\-]+==\S+", line) for line in pins), pins
    locked = {re.split(r"==", line)[0].lower().replace("_", "-") for line in pins}
    assert {"eventsourcing", "fastapi", "uvicorn", "psycopg", "kafka-python"} <= locked
    # Every dependency pyproject.toml declares is in the image (httpx, since the adapters call out with it).
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.split(r"[\[<>=~!; ]", spec, maxsplit=1)[0].lower().replace("_", "-") for spec in declared}
    assert names - locked == set(), "declared in pyproject.toml, missing from requirements.lock"
    # LEDGER_TRACING=otlp must work in the image (README, Operations): the tracing extra is locked too.
    assert {"opentelemetry-sdk", "opentelemetry-exporter-otlp-proto-http"} <= locked
    # The default database is in the folder the non-root user owns.
    data_dir = "/var/lib/ledger"
    assert f"chown ledger:ledger {data_dir}" in dockerfile
    assert "USER ledger" in dockerfile
    assert f"LEDGER_DATABASE_URL=sqlite:///{data_dir}/" in dockerfile
