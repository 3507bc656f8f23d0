"""deploy/: the compose file that adds pimingestd beside Pimcore's Docker setup, its daemon configuration, and
the supervisord program for the bundle's workers, each checked by the tool that will read it.

- The compose file against the Compose Specification's JSON schema (the one Debian's docker-compose ships),
  and merged onto a stand-in of the skeleton's compose file by `docker-compose config`, which needs no Docker
  daemon; then what the merge holds: the volume, one replica, the healthcheck, the secrets, the callback URL.
- The configuration by `pimingestd check-config`, with the secrets as the container gets them.
- The worker program by Debian's supervisord itself, with a stand-in command, until its processes run.

The tools are skipped when absent, except under PIMINGESTD_REQUIRE_ALL=1 (.ci/run), where that fails.
"""

from __future__ import annotations

import configparser
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from .conftest import MakeCluster
from .helpers import REPO

DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "compose.pimingestd.yaml"
CONFIG = DEPLOY / "pimingestd.toml"
WORKER = DEPLOY / "supervisord" / "pimingest-worker.conf"
SKELETON = REPO / "tests" / "fixtures" / "pimcore-skeleton-compose.yaml"
# Debian's docker-compose package ships the specification's schema beside its code.
COMPOSE_SPEC = Path("/usr/lib/python3/dist-packages/compose/config/compose_spec.json")


def need(what: str, present: bool) -> None:
    if present:
        return
    if os.environ.get("PIMINGESTD_REQUIRE_ALL") == "1":
        pytest.fail(f"{what} is missing; PIMINGESTD_REQUIRE_ALL=1 says this check must run here")
    pytest.skip(f"{what} is not installed")


def compose_validator() -> jsonschema.Draft201909Validator:
    need("docker-compose's Compose Specification schema", COMPOSE_SPEC.is_file())
    schema = json.loads(COMPOSE_SPEC.read_text())
    # It names its draft as "http://json-schema.org/draft/2019-09/schema#", a spelling jsonschema does not
    # look up (it warns, then falls back to the latest draft): say the draft outright.
    assert "2019-09" in schema["$schema"], schema["$schema"]
    jsonschema.Draft201909Validator.check_schema(schema)
    return jsonschema.Draft201909Validator(schema)


def test_the_compose_file_follows_the_compose_specification() -> None:
    """The compose file is valid against the Compose Specification's JSON schema; the same validator refuses a
    misspelt healthcheck key and a secret with no source, so it is not a check that cannot fail."""
    validator = compose_validator()
    doc = yaml.safe_load(COMPOSE.read_text())
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]
    assert not errors, errors
    broken = yaml.safe_load(COMPOSE.read_text())
    broken["services"]["pimingestd"]["healthcheck"]["intervall"] = "30s"
    broken["secrets"]["api-token"] = {"path": "x"}
    assert len(list(validator.iter_errors(broken))) == 2


def merged(tmp_path: Path) -> dict[str, Any]:
    """The skeleton's stand-in and the compose file merged by docker-compose, as `docker compose -f ... -f ...`
    would run them from the project's root (both files copied there: relative paths are the project's)."""
    need("docker-compose", shutil.which("docker-compose") is not None)
    shutil.copy(SKELETON, tmp_path / "docker-compose.yaml")
    shutil.copy(COMPOSE, tmp_path / "compose.pimingestd.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "COMPOSE_", "PIMINGESTD_IMAGE"))}
    args = ["docker-compose", "-f", "docker-compose.yaml", "-f", "compose.pimingestd.yaml", "config"]
    quiet = subprocess.run([*args, "-q"], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=60)
    assert quiet.returncode == 0, quiet.stderr
    out = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    return dict(yaml.safe_load(out.stdout))


def test_the_compose_file_adds_pimingestd_beside_the_skeleton(tmp_path: Path) -> None:
    """Merged onto the skeleton's services, pimingestd has its image, its state in a named volume at the image's
    volume, one replica, the healthcheck on /healthz, the two secrets as files, a grace period above the drain;
    PIM-Core's php and supervisord get the same secret, the callback URL on the compose network (the daemon's
    public_url), the worker program in supervisord's conf.d, and the bundle's transport on Doctrine; and the
    daemon's URLs name services of the merged file."""
    doc = merged(tmp_path)
    services = doc["services"]
    assert {"db", "redis", "rabbitmq", "nginx", "php", "supervisord", "pimingestd"} <= set(services)
    daemon = services["pimingestd"]
    assert daemon["image"] == "pimingestd:latest"
    assert daemon["deploy"]["replicas"] == 1
    state = [v for v in daemon["volumes"] if v.split(":")[1] == "/var/lib/pimingestd"]
    assert state and state[0].split(":")[0] in doc["volumes"], daemon["volumes"]
    assert any(v.split(":")[1:] == ["/etc/pimingestd/config.toml", "ro"] for v in daemon["volumes"])
    assert "/healthz" in " ".join(daemon["healthcheck"]["test"]) and daemon["healthcheck"]["test"][0] == "CMD"
    assert {s["source"] for s in daemon["secrets"]} == {"pimcore-secret", "api-token"}
    assert all("file" in doc["secrets"][name] for name in ("pimcore-secret", "api-token"))

    config = tomllib.loads(CONFIG.read_text())
    grace = int(daemon["stop_grace_period"].rstrip("s"))
    assert grace > config["daemon"]["drain_seconds"]
    public = urlsplit(config["http"]["public_url"])
    assert public.hostname in services and public.port == config["http"]["port"]
    assert "PIMINGESTD_HEALTHCHECK_PORT" not in daemon.get("environment", {})  # the port is the config's alone
    for url in (config["pimcore"]["chunk_url"], config["pimcore"]["complete_url"]):
        assert urlsplit(url).hostname in services, url
    for name in ("php", "supervisord"):
        env = services[name]["environment"]
        assert env["PIMINGEST_CALLBACK_URL"] == config["http"]["public_url"] + "/callbacks/ack"
        assert env["PIMINGEST_TRANSPORT_DSN"].startswith("doctrine://")
        assert {s["source"] for s in services[name]["secrets"]} == {"pimcore-secret"}
        assert env["PIMINGEST_SECRET_FILE"] == "/run/secrets/pimcore-secret"
    worker = [v for v in services["supervisord"]["volumes"] if "pimingest-worker.conf" in v]
    assert worker and worker[0].split(":")[1].startswith("/etc/supervisor/conf.d/"), worker
    assert int(services["supervisord"]["stop_grace_period"].rstrip("s")) > int(worker_program()["stopwaitsecs"])


def check_config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pimingestd", "check-config", "--config", str(CONFIG)],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith(("PIMINGESTD_", "CREDENTIALS_"))} | env,
    )


def test_the_container_config_is_valid_with_the_secrets_and_keeps_its_state_in_the_volume(tmp_path: Path) -> None:
    """deploy/pimingestd.toml passes check-config with the secrets as compose mounts them (CREDENTIALS_DIRECTORY),
    every path in it under the volume /var/lib/pimingestd; without them it is refused (exit 78), since it
    listens beyond loopback; the secrets never appear in what it prints."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "pimcore-secret").write_text("hmac-from-a-docker-secret\n")
    (secrets / "api-token").write_text("token-from-a-docker-secret\n")
    ok = check_config({"CREDENTIALS_DIRECTORY": str(secrets)})
    assert ok.returncode == 0, ok.stderr
    assert "hmac-from-a-docker-secret" not in ok.stdout and "token-from-a-docker-secret" not in ok.stdout
    resolved = json.loads(ok.stdout)
    paths = [resolved["daemon"]["state_db"], *resolved["http"]["allowed_roots"]]
    paths += [resolved["inbox"][k] for k in ("dir", "processing_dir", "done_dir", "failed_dir")]
    assert all(p.startswith("/var/lib/pimingestd/") for p in paths), paths
    refused = check_config({})
    assert refused.returncode == 78, refused.stderr
    assert "pimcore.secret" in refused.stderr or "api_token" in refused.stderr, refused.stderr


def worker_program() -> configparser.SectionProxy:
    parser = configparser.RawConfigParser()  # supervisord's %(name)s expansions stay as written
    parser.read_string(WORKER.read_text())
    return parser["program:pimingest-worker"]


def supervisorctl(conf: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["supervisorctl", "-c", str(conf), *args], capture_output=True, text=True, timeout=30)


def test_supervisord_runs_the_worker_program(tmp_path: Path) -> None:
    """Debian's supervisord reads the worker program (a temporary copy whose command is a stand-in that sleeps
    and leaves on SIGTERM, as a worker does) and runs numprocs processes named pimingest-worker_00...; the
    command it replaces is the bundle's consumer with the skeleton's limits; supervisorctl shuts it down."""
    need("supervisord", shutil.which("supervisord") is not None and shutil.which("supervisorctl") is not None)
    program = worker_program()
    assert program["command"].split()[:4] == ["php", "/var/www/html/bin/console", "messenger:consume", "pimingest"]
    assert {"--memory-limit=250M", "--time-limit=3600"} <= set(program["command"].split())
    numprocs = int(program["numprocs"])
    assert numprocs >= 2 and program["process_name"] == "%(program_name)s_%(process_num)02d"
    assert program["autorestart"] == "true" and int(program["stopwaitsecs"]) >= 60

    confd = tmp_path / "conf.d"
    confd.mkdir()
    worker = "import signal, sys, time; signal.signal(signal.SIGTERM, lambda *a: sys.exit(0)); time.sleep(600)"
    stand_in = f"{sys.executable} -c '{worker}'"
    lines = [f"command={stand_in}" if ln.startswith("command=") else ln for ln in WORKER.read_text().splitlines()]
    (confd / "pimingest.conf").write_text("\n".join(lines) + "\n")
    sock = tmp_path / "s.sock"
    conf = tmp_path / "supervisord.conf"
    conf.write_text(
        f"[unix_http_server]\nfile={sock}\n\n"
        f"[supervisord]\nnodaemon=true\nlogfile={tmp_path / 'supervisord.log'}\npidfile={tmp_path / 'supervisord.pid'}\n"
        f"childlogdir={tmp_path}\n\n"
        "[rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n"
        f"[supervisorctl]\nserverurl=unix://{sock}\n\n"
        f"[include]\nfiles = {confd}/*.conf\n"
    )
    daemon = subprocess.Popen(
        ["supervisord", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        expected = {f"pimingest-worker:pimingest-worker_{i:02d}" for i in range(numprocs)}
        deadline = time.monotonic() + 30
        while True:
            status = supervisorctl(conf, "status")
            running = {ln.split()[0] for ln in status.stdout.splitlines() if " RUNNING " in f" {ln} "}
            if running >= expected:
                break
            assert daemon.poll() is None, (tmp_path / "supervisord.log").read_text()
            assert time.monotonic() < deadline, status.stdout + status.stderr
            time.sleep(0.2)
        assert running == expected, status.stdout
        down = supervisorctl(conf, "shutdown")
        assert down.returncode == 0, down.stdout + down.stderr
        assert daemon.wait(timeout=60) == 0
    finally:
        if daemon.poll() is None:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait()


def test_docker_and_podman_read_the_same_ignore_file() -> None:
    """The build context's ignore file exists for both engines (.dockerignore for docker, .containerignore for
    podman and buildah) and says the same, so a build leaves out the same files whichever engine runs it."""
    assert (REPO / ".dockerignore").read_text() == (REPO / ".containerignore").read_text()


def healthchecks() -> dict[str, list[str]]:
    """The healthcheck commands as written: the Containerfile's HEALTHCHECK and the compose file's."""
    text = (REPO / "Containerfile").read_text().replace("\\\n", " ")
    (line,) = [x for x in text.splitlines() if x.startswith("HEALTHCHECK ")]
    image = json.loads(line.split(" CMD ", 1)[1])
    test = yaml.safe_load(COMPOSE.read_text())["services"]["pimingestd"]["healthcheck"]["test"]
    assert test[0] == "CMD", test
    return {"Containerfile": image, "compose": test[1:]}


async def test_the_healthcheck_follows_the_configured_port(make_cluster: MakeCluster) -> None:
    """An operator who moves [http] port off 8080 in the mounted config changes nothing else: both healthchecks
    (the image's and the compose file's) read the port from the config the daemon reads ($PIMINGESTD_CONFIG, the
    image's Env), pass while it is ready and fail once it is gone. A container marked unhealthy for a port
    written in two places would be restarted by an orchestrator for ever."""
    cluster = make_cluster()
    assert cluster.dport != 8080
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIMINGESTD_")}
    env["PIMINGESTD_CONFIG"] = str(cluster.cfg)  # as the image's ENV says
    commands = healthchecks()
    for argv in commands.values():
        assert argv[0] == "python3", argv
    async with cluster:
        for where, argv in commands.items():
            ran = subprocess.run([sys.executable, *argv[1:]], env=env, capture_output=True, text=True, timeout=30)
            assert ran.returncode == 0, (where, ran.stderr[-2000:])
        cluster.close()
        for where, argv in commands.items():
            ran = subprocess.run([sys.executable, *argv[1:]], env=env, capture_output=True, text=True, timeout=30)
            assert ran.returncode != 0, where
