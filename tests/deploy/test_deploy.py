"""The deployment files: Dockerfile, pinned requirements, compose, Kubernetes.

No Docker engine or cluster is needed. What is checked here:
- the Dockerfile, with Docker's own parser (the `dockerfile` package): base
  image, non-root user, pinned install, port, volume, entrypoint, and its
  HEALTHCHECK command, run against a local HTTP server;
- deploy/requirements.lock pins every runtime dependency of pyproject.toml and
  no test tool;
- deploy/docker-compose.yml with `docker-compose config` (Debian's
  docker-compose 1.29, installed by scripts/test as root; skipped without
  it), and its content: the KRaft quorum, the topics, the workers' group;
- the Kubernetes manifests with kubernetes-validate (offline JSON schemas)
  for the core kinds, `kubectl kustomize` when kubectl is there, and the
  structure of the Prometheus Operator's ServiceMonitor and PrometheusRule;
- one source of truth: the rule files Prometheus gets in compose and in
  Kubernetes are the ones promtool tests, the dashboards are grafana/'s, and
  every KPIMON_* variable is a real setting that loads.
"""

from __future__ import annotations

import http.server
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any, get_args, get_origin

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from pydantic import BaseModel

from agents.settings import Settings, load_settings
from tests.agents.prometheus_harness import RULE_FILES

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
LOCK = DEPLOY / "requirements.lock"
COMPOSE = DEPLOY / "docker-compose.yml"
K8S = DEPLOY / "k8s"
PROMETHEUS = DEPLOY / "prometheus"
GRAFANA = ROOT / "grafana"
TEST_TOOLS = {"pytest", "pytest-timeout", "hypothesis", "ruff", "jsonschema", "pyyaml"}
K8S_VERSIONS = ("1.28.0",)  # the oldest Kubernetes the manifests target; latest added below


# --- helpers ---------------------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def interpolate(value: str) -> str:
    """Compose interpolation with the defaults: ${VAR:-default} -> default, $$ -> $."""
    value = re.sub(r"(?<!\$)\$\{(\w+):?-([^}]*)\}", r"\2", value)
    assert not re.search(r"(?<!\$)\$\{?\w", value.replace("$$", "")), f"unset variable in {value}"
    return value.replace("$$", "$")


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: interpolate(str(v)) for k, v in env.items()}


def host_path(spec: str) -> tuple[Path | None, str]:
    """A compose volume 'src:dst[:mode]' -> (host path for bind mounts or None, dst)."""
    src, dst = spec.split(":")[:2]
    if src.startswith((".", "/")):
        return (COMPOSE.parent / src).resolve(), dst
    return None, dst


def setting_exists(name: str) -> bool:
    """Whether KPIMON_<SECTION>__<NAME>... names a field of agents.settings.Settings."""
    model: Any = Settings
    parts = name.removeprefix("KPIMON_").lower().split("__")
    for i, part in enumerate(parts):
        fields = model.model_fields
        if part not in fields:
            return False
        annotation = fields[part].annotation
        candidates = [annotation, *get_args(annotation)]
        models = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if i == len(parts) - 1:
            return True
        if not models:
            # A mapping (e.g. engine.policies.<segment>): its keys are free.
            return any(get_origin(c) is dict for c in candidates)
        model = models[0]
    return True


def assert_settings_load(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, config: Path | None = None
) -> Settings:
    """Every KPIMON_* variable is a setting, and all of them together load."""
    unknown = [k for k in env if k.startswith("KPIMON_") and k != "KPIMON_CONFIG"]
    assert [k for k in unknown if not setting_exists(k)] == []
    for key in list(os.environ):
        if key.startswith("KPIMON_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith("KPIMON_") and key != "KPIMON_CONFIG":
            monkeypatch.setenv(key, value)
    return load_settings(config)


def dockerfile_commands() -> list[Any]:
    dockerfile = pytest.importorskip("dockerfile", reason="the `dockerfile` parser (test extra)")
    return list(dockerfile.parse_file(str(DOCKERFILE)))


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for c in dockerfile_commands():
        if c.cmd == "ENV":
            env |= dict(zip(c.value[::2], c.value[1::2], strict=True))
    return env


def lock_pins() -> dict[str, tuple[str, str]]:
    """Canonical name -> (name as written, version) of deploy/requirements.lock."""
    pins = {}
    for line in LOCK.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!-]+)", line)
        assert match, f"not an exact pin: {line!r}"
        pins[canonicalize_name(match[1])] = (match[1], match[2])
    return pins


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE)


def kpimon_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services running the kpimon image (built from deploy/Dockerfile)."""
    return {
        name: s
        for name, s in compose["services"].items()
        if s.get("build", {}).get("dockerfile") == "deploy/Dockerfile"
    }


def workers(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in kpimon_services(compose).items() if "entrypoint" not in s}


def kustomization() -> dict[str, Any]:
    return load_yaml(K8S / "kustomization.yaml")


def k8s_docs() -> list[dict[str, Any]]:
    docs = []
    for name in kustomization()["resources"]:
        docs += [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]
    return docs


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"{kind} {name or ''}: {len(found)} found"
    return found[0]


def k8s_toml() -> Path:
    generated = kustomization()["configMapGenerator"]
    assert [g["name"] for g in generated] == ["kpimon-config"]
    (file,) = generated[0]["files"]
    return K8S / file


def validate_core(docs: list[dict[str, Any]]) -> list[str]:
    """kubernetes-validate (strict) on every doc it has a schema for; the kinds skipped."""
    kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate (test extra)")
    skipped = []
    for version in (*K8S_VERSIONS, kv.latest_version()):
        for doc in docs:
            try:
                kv.validate(doc, version, strict=True)
            except kv.SchemaNotFoundError:
                skipped.append(doc["kind"])
            except kv.ValidationError as exc:
                raise AssertionError(
                    f"{doc['kind']} {doc['metadata']['name']} (Kubernetes {version}): {exc}"
                ) from None
    return sorted(set(skipped))


def alerts_job() -> str:
    """The job the rules expect the workers under (KpimonWorkerDown's selector)."""
    text = (PROMETHEUS / "rules" / "alerts.yml").read_text()
    (job,) = set(re.findall(r'up\{job="([^"]+)"\}', text))
    return job


# --- Dockerfile and pinned requirements --------------------------------------------------


def test_dockerfile_builds_a_non_root_pinned_worker_image() -> None:
    commands = dockerfile_commands()
    by_cmd: dict[str, list[Any]] = {}
    for c in commands:
        by_cmd.setdefault(c.cmd, []).append(c)
    args = dict(a.value[0].split("=", 1) for a in by_cmd["ARG"] if "=" in a.value[0])
    bases = {re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], f.value[0]) for f in by_cmd["FROM"]}
    assert all(re.fullmatch(r"python:3\.11-slim(-\w+)?", b) for b in bases), bases
    # Pinned: the lock is installed, kpimon itself without dependencies, then checked.
    runs = " ".join(r.value[0] for r in by_cmd["RUN"])
    copied = [v for c in by_cmd["COPY"] for v in c.value]
    assert "deploy/requirements.lock" in copied
    assert re.search(r"pip install -r \S*requirements\.lock", runs)
    assert re.search(r"pip install --no-deps \.", runs) and "pip check" in runs
    # RocksDB optional: a pinned rocksdict behind a build argument.
    assert args["WITH_ROCKSDB"] == "false"
    assert re.fullmatch(r"\d+\.\d+\.\d+", args["ROCKSDICT_VERSION"])
    assert "rocksdict==${ROCKSDICT_VERSION}" in runs
    # Runtime stage: non-root user, port, volume, entrypoint.
    (user,) = [u.value[0] for u in by_cmd["USER"]]
    assert user.split(":")[0] not in {"0", "root"}
    assert re.search(rf"useradd [^&]*--uid {user.split(':')[0]}\b", runs)
    assert [e.value for e in by_cmd["EXPOSE"]] == [(str(Settings().worker.web_port),)]
    env = dockerfile_env()
    assert env["KPIMON_WORKER__WEB_HOST"] == "0.0.0.0"
    assert [v.value for v in by_cmd["VOLUME"]] == [(env["KPIMON_WORKER__DATA_DIR"],)]
    (entrypoint,) = by_cmd["ENTRYPOINT"]
    assert entrypoint.json and entrypoint.value == ("kpimon", "worker")


def test_dockerfile_kpimon_variables_are_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = assert_settings_load(dockerfile_env(), monkeypatch)
    assert settings.worker.web_host == "0.0.0.0"


class _Health(http.server.BaseHTTPRequestHandler):
    paths: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.paths.append(self.path)
        ok = self.path == "/livez"
        self.send_response(200 if ok else 404)
        self.end_headers()
        self.wfile.write(b'{"status": "ok"}' if ok else b"")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[tuple[int, list[str]]]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Health)
    paths: list[str] = []
    _Health.paths = paths
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], paths
    finally:
        server.shutdown()
        server.server_close()


def test_healthcheck_requests_livez_on_the_web_port(health_server: tuple[int, list[str]]) -> None:
    """The container's health is liveness: /livez, which stays up through a flood."""
    (check,) = [c for c in dockerfile_commands() if c.cmd == "HEALTHCHECK"]
    assert check.json and check.value[:3] == ("CMD", "python", "-c")
    assert "curl" not in check.original and "/livez" in check.value[3]
    flags = dict(f.removeprefix("--").split("=", 1) for f in check.flags)
    assert {"interval", "timeout", "start-period", "retries"} <= set(flags)
    command = [sys.executable, *check.value[2:]]
    port, paths = health_server
    env = {"PATH": os.environ.get("PATH", ""), "KPIMON_WORKER__WEB_PORT": str(port)}
    healthy = subprocess.run(command, env=env, capture_output=True, timeout=30)
    assert healthy.returncode == 0, healthy.stderr.decode()
    assert paths == ["/livez"]
    # Nothing listening: unhealthy (exit status not 0).
    env["KPIMON_WORKER__WEB_PORT"] = str(closed_port())
    down = subprocess.run(command, env=env, capture_output=True, timeout=30)
    assert down.returncode != 0
    # Without the variable it asks the default port.
    assert f"'KPIMON_WORKER__WEB_PORT', '{Settings().worker.web_port}'" in check.value[3]


def closed_port() -> int:
    """A loopback port with nothing listening on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_lock_pins_every_runtime_dependency_and_no_test_tool() -> None:
    pins = lock_pins()
    for spec in pyproject()["project"]["dependencies"]:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} (pyproject dependency) is not in {LOCK.name}"
        assert req.specifier.contains(pins[name][1], prereleases=True), (spec, pins[name])
    test_extra = {
        canonicalize_name(Requirement(r).name)
        for r in pyproject()["project"]["optional-dependencies"]["test"]
    }
    assert not (set(pins) & (test_extra | TEST_TOOLS)), set(pins) & (test_extra | TEST_TOOLS)
    assert "kpimon" not in pins


def test_lock_is_closed_under_dependencies_where_the_venv_matches() -> None:
    """Each locked package installed here at the locked version: its own
    runtime requirements are locked too (the lock is a whole closure)."""
    pins = lock_pins()
    checked = 0
    for name, (_, version) in pins.items():
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        if dist.version != version:
            continue
        checked += 1
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker and not req.marker.evaluate({"extra": ""}):
                continue
            dep = canonicalize_name(req.name)
            assert dep in pins, f"{name} {version} needs {req.name}, not in {LOCK.name}"
            assert req.specifier.contains(pins[dep][1], prereleases=True), (name, spec)
    if not checked:
        pytest.skip("no locked package is installed at its locked version here")


# --- docker-compose ----------------------------------------------------------------------


def test_compose_config_validates_with_docker_compose(compose: dict[str, Any]) -> None:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip(
            "docker-compose is not installed (Debian's docker-compose 1.29: "
            "`apt-get install docker-compose`, which scripts/test does as root)"
        )
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")}
    run = subprocess.run(
        [binary, "-f", str(COMPOSE), "--profile", "simulator", "config"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr
    resolved = yaml.safe_load(run.stdout)
    assert set(resolved["services"]) == set(compose["services"])
    # docker-compose's resolution agrees with the checks below, which read the file.
    for name, service in compose["services"].items():
        assert env_of(resolved["services"][name]) == env_of(service), name
    mounts = {
        (v["source"] if isinstance(v, dict) else v.split(":")[0])
        for s in resolved["services"].values()
        for v in s.get("volumes", [])
    }
    for expected in (PROMETHEUS / "rules", DEPLOY / "alertmanager" / "alertmanager.yml"):
        assert str(expected) in mounts
    assert str(GRAFANA / "dashboards") in mounts


def test_kafka_is_a_three_node_kraft_quorum(compose: dict[str, Any]) -> None:
    nodes = {
        n: s
        for n, s in compose["services"].items()
        if "apache/kafka" in interpolate(s["image"]) and "KAFKA_NODE_ID" in env_of(s)
    }
    assert len(nodes) == 3
    envs = {n: env_of(s) for n, s in nodes.items()}
    ids = {n: e["KAFKA_NODE_ID"] for n, e in envs.items()}
    assert len(set(ids.values())) == 3
    assert len({e["CLUSTER_ID"] for e in envs.values()}) == 1
    (cluster_id,) = {e["CLUSTER_ID"] for e in envs.values()}
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", cluster_id)
    for name, env in envs.items():
        assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
        assert nodes[name]["hostname"] == name
        listeners = dict(
            re.fullmatch(r"(\w+)://[^:]*:(\d+)", x).groups()  # type: ignore[union-attr]
            for x in env["KAFKA_LISTENERS"].split(",")
        )
        controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
        voters = {f"{ids[n]}@{n}:{listeners[controller]}" for n in nodes}
        assert set(env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")) == voters
        protocols = dict(
            x.split(":") for x in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
        )
        assert set(listeners) == set(protocols)
        inter = env["KAFKA_INTER_BROKER_LISTENER_NAME"]
        advertised = env["KAFKA_ADVERTISED_LISTENERS"].split(",")
        assert f"{inter}://{name}:{listeners[inter]}" in advertised
        assert controller not in {a.split("://")[0] for a in advertised}
        for key in ("DEFAULT_REPLICATION_FACTOR", "OFFSETS_TOPIC_REPLICATION_FACTOR",
                    "TRANSACTION_STATE_LOG_REPLICATION_FACTOR"):  # fmt: skip
            assert env[f"KAFKA_{key}"] == "3", key
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
        volumes = [host_path(v) for v in nodes[name]["volumes"]]
        assert any(dst == env["KAFKA_LOG_DIRS"] for _, dst in volumes)


FAKE_KAFKA_TOPICS = """#!/bin/sh
echo "$*" >> "$(dirname "$0")/calls"
"""


def topic_plan(compose: dict[str, Any], tmp_path: Path) -> dict[str, tuple[int, str | None]]:
    """Run topic-init's script (interpolated as compose does) with /bin/sh and a
    stand-in kafka-topics.sh that records its arguments: topic -> (partitions,
    cleanup.policy or None)."""
    init = compose["services"]["topic-init"]
    assert init["entrypoint"][0] in {"/bin/sh", "sh"}
    (script,) = [interpolate(c) for c in init["command"]]
    real = "/opt/kafka/bin/kafka-topics.sh"  # where apache/kafka has it
    assert real in script
    fake = tmp_path / "kafka-topics.sh"
    fake.write_text(FAKE_KAFKA_TOPICS)
    fake.chmod(0o755)
    env = {"PATH": os.environ.get("PATH", "")} | env_of(init)
    run = subprocess.run(
        ["/bin/sh", "-c", script.replace(real, str(fake))],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    brokers = {n for n, s in compose["services"].items() if "KAFKA_NODE_ID" in env_of(s)}
    plan = {}
    for line in (tmp_path / "calls").read_text().splitlines():
        args = line.split()
        if "--create" not in args:
            continue
        opts: dict[str, list[str]] = {}
        for flag, value in zip(args, args[1:], strict=False):
            if flag.startswith("--") and not value.startswith("--"):
                opts.setdefault(flag, []).append(value)
        assert "--if-not-exists" in args
        assert {b.split(":")[0] for b in opts["--bootstrap-server"][0].split(",")} == brokers
        assert opts["--replication-factor"] == [str(len(brokers))]
        configs = dict(c.split("=", 1) for c in opts.get("--config", []))
        assert configs["min.insync.replicas"] == "2"
        (topic,) = opts["--topic"]
        plan[topic] = (int(opts["--partitions"][0]), configs.get("cleanup.policy"))
    return plan


def test_topic_init_creates_every_topic_the_workers_use(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    plan = topic_plan(compose, tmp_path)
    for name, worker in workers(compose).items():
        settings = assert_settings_load(env_of(worker), monkeypatch)
        t = settings.topics
        for topic in t.sources():
            assert plan[topic][0] >= len(workers(compose)), (
                f"{topic}: fewer partitions than workers"
            )
        assert plan[t.engine] == (t.engine_partitions, None), name
        changelog = f"{settings.worker.app_id}-snapshots-changelog"
        assert plan[changelog] == (t.engine_partitions, "compact")
        assert plan[t.windows][1] == "compact"
        assert plan[t.alerts][1] == "compact"
        assert t.dead_letter in plan
        assert worker["depends_on"]["topic-init"]["condition"] == "service_completed_successfully"
    assert {n for n, (p, _) in plan.items() if p == 12} >= set(Settings().topics.sources())


def test_two_or_more_workers_in_one_group(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    found = workers(compose)
    assert len(found) >= 2
    settings = {n: assert_settings_load(env_of(s), monkeypatch) for n, s in found.items()}
    assert len({s.worker.app_id for s in settings.values()}) == 1
    assert len({s.model_dump_json() for s in settings.values()}) == 1  # same settings
    assert all(s.kafka.broker for s in settings.values())  # never the embedded broker
    data = set()
    ports = set()
    for name, service in found.items():
        s = settings[name]
        assert s.worker.web_host == "0.0.0.0"
        volumes = [host_path(v) for v in service["volumes"]]
        (volume,) = [src for src, dst in volumes if dst == s.worker.data_dir]
        (published,) = [
            p.split(":")[0] for p in service["ports"] if p.endswith(f":{s.worker.web_port}")
        ]
        assert volume is None  # a named volume per worker
        data.add(next(v for v in service["volumes"] if v.endswith(s.worker.data_dir)))
        ports.add(published)
    assert len(data) == len(found) and len(ports) == len(found)


def test_compose_workers_health_is_liveness(compose: dict[str, Any]) -> None:
    """Each worker's healthcheck asks /livez (progress, however slow), never
    /healthz or /readyz, which a flood turns 503 for minutes."""
    for name, service in workers(compose).items():
        check = service["healthcheck"]
        assert not check.get("disable"), name
        test = " ".join(check["test"])
        assert check["test"][0] == "CMD" and "curl" not in test, name
        (url,) = re.findall(r"http://[^'\"]+", test)
        assert url == "http://127.0.0.1:6066/livez", (name, url)
        assert str(env_of(service)["KPIMON_WORKER__WEB_PORT"]) == "6066", name
        assert check["retries"] >= 3 and check["start_period"], name


def test_every_kpimon_variable_in_compose_is_a_setting(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    services = kpimon_services(compose)
    assert "simulator" in services
    for service in services.values():
        assert_settings_load(env_of(service), monkeypatch)
    # Elsewhere, KPIMON_* names are Grafana's provisioning variables only.
    for name, service in compose["services"].items():
        if name not in services:
            others = {k for k in env_of(service) if k.startswith("KPIMON_")}
            assert others <= grafana_variables(), (name, others)


def test_simulator_is_an_optional_profile(compose: dict[str, Any]) -> None:
    from agents.cli import build_parser

    sim = compose["services"]["simulator"]
    assert sim["profiles"] == ["simulator"]
    command = interpolate(" ".join(sim["command"]))
    assert re.search(r"\bkpimon simulate --broker \S+ --days \S+", command)
    parser = build_parser()
    sub = next(a for a in parser._subparsers._group_actions if a.dest == "command")  # type: ignore[union-attr]
    known = set(sub.choices["simulate"]._option_string_actions)
    assert set(re.findall(r"(?<!\S)(--[a-z-]+)", command)) <= known


def test_prometheus_in_compose_gets_the_promtool_rule_files(compose: dict[str, Any]) -> None:
    service = compose["services"]["prometheus"]
    mounts = {dst: src for src, dst in map(host_path, service["volumes"]) if src is not None}
    config_arg = next(a for a in service["command"] if a.startswith("--config.file="))
    config_path = config_arg.split("=", 1)[1]
    config_file = mounts[config_path]
    config = load_yaml(config_file)
    container_dir = Path(config_path).parent
    resolved = set()
    for rule in config["rule_files"]:
        in_container = (container_dir / rule).as_posix()
        (mount,) = [d for d in mounts if in_container.startswith(d.rstrip("/") + "/")]
        resolved.add((mounts[mount] / Path(in_container).relative_to(mount)).resolve())
    assert resolved == promtool_rule_files()
    # The same rule file names as deploy/prometheus/prometheus.yml: no copies, no others.
    assert config["rule_files"] == load_yaml(PROMETHEUS / "prometheus.yml")["rule_files"]
    # Scrapes every worker as the job the rules expect, and alerts to Alertmanager.
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == alerts_job()]
    targets = {t for sc in job["static_configs"] for t in sc["targets"]}
    expected = set()
    for name, worker in workers(compose).items():
        port = env_of(worker).get("KPIMON_WORKER__WEB_PORT", str(Settings().worker.web_port))
        expected.add(f"{worker.get('hostname', name)}:{port}")
    assert targets == expected
    assert job.get("metrics_path", "/metrics") == "/metrics"
    am = {
        t
        for a in config["alerting"]["alertmanagers"]
        for sc in a["static_configs"]
        for t in sc["targets"]
    }
    assert am == {"alertmanager:9093"} and "alertmanager" in compose["services"]


def test_compose_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian's prometheus package; scripts/test)")
    shutil.copy(DEPLOY / "compose" / "prometheus.yml", tmp_path / "prometheus.yml")
    (tmp_path / "rules").symlink_to(PROMETHEUS / "rules")
    run = subprocess.run(
        [promtool, "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_alertmanager_uses_the_project_configuration(compose: dict[str, Any]) -> None:
    service = compose["services"]["alertmanager"]
    mounts = {dst: src for src, dst in map(host_path, service["volumes"]) if src is not None}
    config = next(a for a in service["command"] if a.startswith("--config.file=")).split("=", 1)[1]
    assert mounts[config] == DEPLOY / "alertmanager" / "alertmanager.yml"


def grafana_variables() -> set[str]:
    """${VAR} names that grafana/provisioning needs from Grafana's environment."""
    names = set()
    for path in (GRAFANA / "provisioning").rglob("*.y*ml"):
        names |= set(re.findall(r"\$\{(\w+)\}", path.read_text()))
    return names


def test_grafana_is_provisioned_from_the_grafana_directory(compose: dict[str, Any]) -> None:
    service = compose["services"]["grafana"]
    mounts = {dst: src for src, dst in map(host_path, service["volumes"]) if src is not None}
    for sub in sorted(p for p in (GRAFANA / "provisioning").iterdir() if p.is_dir()):
        assert mounts.get(f"/etc/grafana/provisioning/{sub.name}") == sub, sub
    env = env_of(service)
    assert grafana_variables() <= set(env)
    assert mounts[env["KPIMON_GRAFANA_DASHBOARDS"]] == GRAFANA / "dashboards"
    assert re.fullmatch(r"http://prometheus:9090/?", env["KPIMON_PROMETHEUS_URL"])


# --- one source of truth for the rules ---------------------------------------------------


def promtool_rule_files() -> set[Path]:
    """The rule files promtool's unit tests load (deploy/prometheus/tests/*.yml)."""
    files = set()
    for test in sorted((PROMETHEUS / "tests").glob("*.yml")):
        files |= {(test.parent / r).resolve() for r in load_yaml(test)["rule_files"]}
    return files


def test_rule_files_are_one_set_everywhere() -> None:
    tested = promtool_rule_files()
    assert tested == {p.resolve() for p in RULE_FILES}  # the promtool and Prometheus tests
    assert tested == {p.resolve() for p in (PROMETHEUS / "rules").glob("*.y*ml")}
    config = PROMETHEUS / "prometheus.yml"
    assert {(config.parent / r).resolve() for r in load_yaml(config)["rule_files"]} == tested
    sys.path.insert(0, str(K8S))
    try:
        import gen_prometheusrule as gen
    finally:
        sys.path.remove(str(K8S))
    assert {p.resolve() for p in gen.rule_files()} == tested


# --- Kubernetes --------------------------------------------------------------------------


def test_kustomization_lists_every_manifest() -> None:
    k = kustomization()
    assert k["apiVersion"] == "kustomize.config.k8s.io/v1beta1" and k["kind"] == "Kustomization"
    listed = set(k["resources"]) | {f for g in k["configMapGenerator"] for f in g["files"]}
    for name in listed:
        assert (K8S / name).is_file(), name
    present = {p.name for p in K8S.iterdir() if p.suffix in {".yaml", ".yml", ".toml"}}
    assert present - {"kustomization.yaml"} == listed


def configmap_from_generator() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "kpimon-config"},
        "data": {k8s_toml().name: k8s_toml().read_text()},
    }


def test_core_manifests_validate_against_kubernetes_schemas() -> None:
    skipped = validate_core([*k8s_docs(), configmap_from_generator()])
    assert skipped == ["PrometheusRule", "ServiceMonitor"]


def test_kustomize_build_validates() -> None:
    kubectl, kustomize = shutil.which("kubectl"), shutil.which("kustomize")
    if kubectl is None and kustomize is None:
        pytest.skip("neither kubectl nor kustomize is installed: `kustomize build` not checked")
    command = [kustomize, "build"] if kustomize else [kubectl, "kustomize"]  # type: ignore[list-item]
    run = subprocess.run([*command, str(K8S)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    docs = [d for d in yaml.safe_load_all(run.stdout) if d]
    assert validate_core(docs) == ["PrometheusRule", "ServiceMonitor"]
    (config,) = [d for d in docs if d["kind"] == "ConfigMap"]
    statefulset = one(docs, "StatefulSet")
    names = [
        v["configMap"]["name"]
        for v in statefulset["spec"]["template"]["spec"]["volumes"]
        if "configMap" in v
    ]
    assert names == [config["metadata"]["name"]]  # the generated, hashed name
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {
        kustomization()["namespace"]
    }


def test_statefulset_wires_config_secret_store_and_probes(monkeypatch: pytest.MonkeyPatch) -> None:
    docs = k8s_docs()
    sts = one(docs, "StatefulSet")
    spec = sts["spec"]
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    headless = one(docs, "Service", spec["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["selector"].items() <= spec["template"]["metadata"]["labels"].items()
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    # Settings: the TOML file from the ConfigMap, named by KPIMON_CONFIG; SASL from the Secret.
    env = {e["name"]: e for e in container["env"]}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    (config_volume,) = [
        n for n, v in volumes.items() if v.get("configMap", {}).get("name") == "kpimon-config"
    ]
    assert (
        env["KPIMON_CONFIG"]["value"] == f"{mounts[config_volume]['mountPath']}/{k8s_toml().name}"
    )
    secret = one(docs, "Secret")
    values = {}
    for name, e in env.items():
        if "valueFrom" in e:
            ref = e["valueFrom"]["secretKeyRef"]
            assert ref["name"] == secret["metadata"]["name"]
            values[name] = secret["stringData"][ref["key"]]
        else:
            values[name] = e["value"]
    assert "secretKeyRef" in env["KPIMON_KAFKA__SASL_PASSWORD"]["valueFrom"]
    settings = assert_settings_load(values, monkeypatch, config=k8s_toml())
    assert settings.kafka.sasl_password is not None and settings.kafka.sasl_username
    assert settings.kafka.security_protocol.startswith("SASL_") and settings.kafka.sasl_mechanism
    assert settings.kafka.broker
    # RocksDB store on the claim of the volumeClaimTemplate.
    assert settings.worker.store == "rocksdb://"
    (claim,) = spec["volumeClaimTemplates"]
    assert mounts[claim["metadata"]["name"]]["mountPath"] == settings.worker.data_dir
    assert claim["spec"]["resources"]["requests"]["storage"]
    # The web port: container port, probes on /healthz.
    (port,) = container["ports"]
    assert (
        port["containerPort"] == settings.worker.web_port and settings.worker.web_host == "0.0.0.0"
    )
    # Liveness (and startup) on /livez, which stays up through a flood;
    # readiness on /readyz, caught up. Never /healthz, which a flood fails.
    paths = {"livenessProbe": "/livez", "startupProbe": "/livez", "readinessProbe": "/readyz"}
    for probe, path in paths.items():
        get = container[probe]["httpGet"]
        assert get["path"] == path and get["port"] in (port["name"], port["containerPort"]), probe
    liveness = container["livenessProbe"]
    assert liveness["periodSeconds"] * liveness["failureThreshold"] >= 60
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"]) and {"cpu", "memory"} <= set(
        resources["limits"]
    )
    # Non-root, the image's user.
    (user,) = [c.value[0] for c in dockerfile_commands() if c.cmd == "USER"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert str(pod["securityContext"]["runAsUser"]) == user.split(":")[0]
    assert container["image"] in {i["name"] for i in kustomization()["images"]}


def test_servicemonitor_scrapes_the_metrics_service_as_the_rules_expect() -> None:
    docs = k8s_docs()
    monitor = one(docs, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", monitor["metadata"]["name"])
    spec = monitor["spec"]
    selector = spec["selector"]["matchLabels"]
    selected = [
        d for d in docs
        if d["kind"] == "Service" and selector.items() <= d["metadata"].get("labels", {}).items()
    ]  # fmt: skip
    assert len(selected) == 1, (
        "the ServiceMonitor must select exactly one Service (no double scrape)"
    )
    (service,) = selected
    assert service["spec"].get("clusterIP") != "None"
    # A worker draining a backlog is not ready (/readyz), and its lag is what
    # must be scraped then.
    assert service["spec"].get("publishNotReadyAddresses") is True
    port_names = {p["name"] for p in service["spec"]["ports"]}
    assert spec["endpoints"]
    for endpoint in spec["endpoints"]:
        assert endpoint["port"] in port_names
        assert endpoint.get("path", "/metrics") == "/metrics"
    # The job label Prometheus Operator gives: the jobLabel's value, else the Service name.
    labels = service["metadata"]["labels"]
    job = labels[spec["jobLabel"]] if "jobLabel" in spec else service["metadata"]["name"]
    assert job == alerts_job()
    sts = one(docs, "StatefulSet")
    assert (
        service["spec"]["selector"].items() <= sts["spec"]["template"]["metadata"]["labels"].items()
    )


def test_prometheusrule_is_generated_from_the_rule_files_and_current() -> None:
    sys.path.insert(0, str(K8S))
    try:
        import gen_prometheusrule as gen
    finally:
        sys.path.remove(str(K8S))
    committed = (K8S / "prometheusrule.yaml").read_text()
    assert committed == gen.render(), "run: python deploy/k8s/gen_prometheusrule.py"
    docs = [d for d in yaml.safe_load_all(committed) if d]
    sources = set()
    for doc in docs:
        assert doc["apiVersion"] == "monitoring.coreos.com/v1" and doc["kind"] == "PrometheusRule"
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"])
        source = ROOT / doc["metadata"]["annotations"]["kpimon.io/source"]
        sources.add(source.resolve())
        groups = doc["spec"]["groups"]
        assert groups == load_yaml(source)["groups"]
        for group in groups:
            assert isinstance(group["name"], str) and group["rules"]
            for rule in group["rules"]:
                assert ("record" in rule) != ("alert" in rule), rule
                assert isinstance(rule["expr"], str) and rule["expr"].strip()
                assert set(rule) <= {
                    "record",
                    "alert",
                    "expr",
                    "for",
                    "keep_firing_for",
                    "labels",
                    "annotations",
                }
    assert sources == promtool_rule_files()
    assert "prometheusrule.yaml" in kustomization()["resources"]


def test_disruption_budget_takes_one_worker_at_a_time_and_never_waits_on_an_unready_one() -> None:
    pdb = load_yaml(K8S / "poddisruptionbudget.yaml")
    statefulset = load_yaml(K8S / "statefulset.yaml")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    pod_labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
