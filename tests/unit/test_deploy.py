"""deploy/ is wired to the code: parsed and cross-checked, since no Docker engine runs here."""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import ipaddress
import re
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from services.channels.dispatcher import GROUP as WEBHOOK_GROUP
from services.channels.options import ChannelSettings
from services.channels.url_safety import METADATA
from shared.keys import Keys
from tests.shipped_redis import shipped

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
SETTINGS_ENV = {f"BACKTRACK_{name.upper()}" for name in ChannelSettings.model_fields}
#: ``python -m <module>`` -> the setting holding its HTTP port.
PORT_SETTING = {
    "services.logging_svc": "ingest_port",
    "services.prescriber": "clinic_port",
    "services.channels": "channels_port",
}
APP_IMAGE = "backtrack"
APP_UID = 10001


def _env_name(field: str) -> str:
    return f"BACKTRACK_{field.upper()}"


def _default(field: str) -> Any:
    return ChannelSettings.model_fields[field].default


def _yaml_files() -> list[Path]:
    return sorted(DEPLOY.rglob("*.yaml"))


def _k8s_objects() -> list[dict[str, Any]]:
    objects = []
    for path in sorted(K8S.rglob("*.yaml")):
        if path.name != "kustomization.yaml":
            objects += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return objects


def _of_kind(kind: str) -> list[dict[str, Any]]:
    return [o for o in _k8s_objects() if o["kind"] == kind]


def _named(kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in _of_kind(kind) if o["metadata"]["name"] == name]
    return found


def _workloads() -> list[dict[str, Any]]:
    return _of_kind("Deployment") + _of_kind("StatefulSet")


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    (container,) = containers
    return container


def _module(command: list[str]) -> str:
    assert command[:2] == ["python", "-m"], command
    return command[2]


def _pod_env(container: dict[str, Any]) -> dict[str, Any]:
    """The container's environment: ConfigMaps from envFrom, then its own env entries."""
    env: dict[str, Any] = {}
    for source in container.get("envFrom", []):
        env.update(_named("ConfigMap", source["configMapRef"]["name"])["data"])
    for item in container.get("env", []):
        env[item["name"]] = item.get("value", item.get("valueFrom"))
    return env


def _port_number(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    return int(number)


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


def _app_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in compose["services"].items() if name != "redis"}


def _redis_conf(path: Path) -> dict[str, str]:
    directives = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.strip().partition(" ")
            directives[key] = value
    return directives


def _dockerfile() -> str:
    """The Dockerfile's instructions, without comments."""
    lines = (DEPLOY / "Dockerfile").read_text().splitlines()
    return "\n".join(line for line in lines if not line.lstrip().startswith("#"))


def test_every_manifest_parses_into_named_objects() -> None:
    """Every YAML under deploy/ parses; every Kubernetes object has apiVersion, kind and a name."""
    assert len(_yaml_files()) >= 8
    for path in _yaml_files():
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        assert docs, path
    for obj in _k8s_objects():
        assert obj["apiVersion"], obj
        assert obj["kind"], obj
        assert obj["metadata"]["name"], obj


def test_kustomizations_list_every_manifest() -> None:
    """The base kustomization applies every manifest in base/, and the overlays' resources exist."""
    base = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    files = {p.name for p in (K8S / "base").glob("*.yaml")} - {"kustomization.yaml"}
    assert set(base["resources"]) == files
    assert [i["name"] for i in base["images"]] == [APP_IMAGE]
    for kustomization in K8S.glob("*/kustomization.yaml"):
        for resource in yaml.safe_load(kustomization.read_text())["resources"]:
            assert (kustomization.parent / resource).exists(), (kustomization, resource)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not on PATH")
@pytest.mark.parametrize("overlay", ["base", "keda"])
def test_kustomize_renders(overlay: str) -> None:
    """`kubectl kustomize` builds each directory offline and sets one tag on the app image."""
    out = subprocess.run(
        ["kubectl", "kustomize", str(K8S / overlay)], capture_output=True, text=True, check=True
    ).stdout
    images = set(re.findall(r"image: (\S+)", out))
    app_images = {i for i in images if i.split(":")[0] == APP_IMAGE}
    assert len(app_images) == 1, images
    assert ":" in next(iter(app_images))


def test_deployments_share_one_image(compose: dict[str, Any]) -> None:
    """Every backtrack Deployment and compose service runs the same image (the command differs)."""
    assert {_container(d)["image"] for d in _of_kind("Deployment")} == {APP_IMAGE}
    images = {s["image"] for s in _app_services(compose).values()}
    builds = {str(s["build"]) for s in _app_services(compose).values()}
    assert len(images) == 1
    assert len(builds) == 1


def test_commands_name_runnable_modules(compose: dict[str, Any]) -> None:
    """Each command is `python -m <package>` of a package with a __main__, one per service."""
    commands = [_container(d)["command"] for d in _of_kind("Deployment")]
    commands += [s["command"] for s in _app_services(compose).values()]
    for command in commands:
        assert importlib.util.find_spec(f"{_module(command)}.__main__") is not None, command
    modules = [_module(_container(d)["command"]) for d in _of_kind("Deployment")]
    assert sorted(modules) == sorted(PORT_SETTING)


def test_container_ports_match_services_and_port_settings() -> None:
    """Container port == BACKTRACK_*_PORT env == the setting's default, and a Service targets it."""
    services = _of_kind("Service")
    for deployment in _of_kind("Deployment"):
        container = _container(deployment)
        field = PORT_SETTING[_module(container["command"])]
        (port,) = [p["containerPort"] for p in container["ports"]]
        assert port == _default(field)
        assert _pod_env(container)[_env_name(field)] == str(port)
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        (service,) = [s for s in services if _selects(s["spec"]["selector"], labels)]
        assert [_port_number(container, p["targetPort"]) for p in service["spec"]["ports"]] == [
            port
        ]


def test_services_select_exactly_one_workload() -> None:
    """Each Service's selector matches the pods of one Deployment or StatefulSet, no more."""
    for service in _of_kind("Service"):
        matched = [
            w["metadata"]["name"]
            for w in _workloads()
            if _selects(service["spec"]["selector"], w["spec"]["template"]["metadata"]["labels"])
        ]
        assert len(matched) == 1, (service["metadata"]["name"], matched)


def test_workload_selectors_match_their_pod_labels() -> None:
    """Each Deployment/StatefulSet selector matches its own pod template (else apply is refused)."""
    for workload in _workloads():
        selector = workload["spec"]["selector"]["matchLabels"]
        assert _selects(selector, workload["spec"]["template"]["metadata"]["labels"])


def test_probes_hit_readyz_and_healthz_on_the_service_port() -> None:
    """Readiness is /readyz and liveness /healthz, both on the container's HTTP port."""
    for deployment in _of_kind("Deployment"):
        container = _container(deployment)
        (port,) = [p["containerPort"] for p in container["ports"]]
        for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
            get = container[probe]["httpGet"]
            assert get["path"] == path, (deployment["metadata"]["name"], probe)
            assert _port_number(container, get["port"]) == port


def test_every_env_name_is_a_setting(compose: dict[str, Any]) -> None:
    """Every BACKTRACK_* name in compose, Kubernetes and the Dockerfile is a settings field."""
    names = set(re.findall(r"BACKTRACK_[A-Z_]+", _dockerfile()))
    for service in _app_services(compose).values():
        names |= set(service["environment"])
    for deployment in _of_kind("Deployment"):
        names |= set(_pod_env(_container(deployment)))
    names |= {k for cm in _of_kind("ConfigMap") for k in cm["data"] if k.startswith("BACKTRACK_")}
    names -= {"BACKTRACK_IMAGE", "BACKTRACK_REDIS_PROFILE"}  # compose interpolation only
    names -= {"REDIS_USERNAME", "REDIS_PASSWORD"}  # the Redis login, only within the URL
    assert names, "no settings found"
    assert names <= SETTINGS_ENV, names - SETTINGS_ENV


def _production_env(env: dict[str, Any]) -> None:
    assert env["BACKTRACK_ENVIRONMENT"] == "production"
    assert env["BACKTRACK_HOST"] == "0.0.0.0"


def _master_key_file(deployment: dict[str, Any], env: dict[str, Any]) -> str:
    """The pod's BACKTRACK_MASTER_KEY_FILE, checked to be the Secret's mounted file."""
    path = Path(env["BACKTRACK_MASTER_KEY_FILE"])
    mounts = {m["name"]: m for m in _container(deployment)["volumeMounts"]}
    assert mounts["master-key"]["mountPath"] == str(path.parent)
    assert mounts["master-key"]["readOnly"] is True
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    secret = volumes["master-key"]["secret"]
    assert secret["secretName"] == "backtrack-master-key"
    assert secret["items"] == [{"key": "master-key", "path": path.name}]
    return str(path)


def test_kubernetes_env_is_complete_and_valid(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Each pod gets production settings, the secret and the Redis login from Secrets (the
    URL built from them), the master key as a file mounted from a Secret, and values
    Settings accepts."""
    key_file = tmp_path / "master-key"
    key_file.write_text(base64.b64encode(secrets.token_bytes(32)).decode())
    for deployment in _of_kind("Deployment"):
        env = _pod_env(_container(deployment))
        _production_env(env)
        _master_key_file(deployment, env)
        env["BACKTRACK_MASTER_KEY_FILE"] = str(key_file)
        ref = env["BACKTRACK_SECRET"]["secretKeyRef"]
        assert ref == {"name": "backtrack", "key": "secret"}
        url = env["BACKTRACK_REDIS_URL"]
        assert url == "redis://$(REDIS_USERNAME):$(REDIS_PASSWORD)@redis:6379/0"
        for name, key in (("REDIS_USERNAME", "username"), ("REDIS_PASSWORD", "password")):
            assert env[name]["secretKeyRef"] == {"name": "backtrack-redis", "key": key}
        order = [item["name"] for item in _container(deployment)["env"]]
        # Kubernetes expands $(NAME) only for variables defined earlier in the list
        assert order.index("REDIS_PASSWORD") < order.index("BACKTRACK_REDIS_URL")
        for name, value in env.items():
            if name.startswith("BACKTRACK_"):
                monkeypatch.setenv(name, "s" * 48 if name == "BACKTRACK_SECRET" else value)
        assert ChannelSettings().environment == "production"
    for config in _of_kind("ConfigMap"):
        assert not {"BACKTRACK_SECRET", "BACKTRACK_REDIS_URL", "BACKTRACK_MASTER_KEY"} & set(
            config["data"]
        )


def test_compose_env_is_complete_and_valid(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each compose service gets production settings, a required secret and master key,
    and valid values."""
    master_key = base64.b64encode(secrets.token_bytes(32)).decode()
    for name, service in _app_services(compose).items():
        env = dict(service["environment"])
        _production_env(env)
        assert env["BACKTRACK_SECRET"].startswith("${BACKTRACK_SECRET:?"), name
        assert env.pop("BACKTRACK_MASTER_KEY").startswith("${BACKTRACK_MASTER_KEY:?"), name
        monkeypatch.setenv("BACKTRACK_MASTER_KEY", master_key)
        login = r"redis://backtrack:\$\{BACKTRACK_REDIS_PASSWORD:\?[^}]+\}@redis:6379/0"
        assert re.fullmatch(login, env["BACKTRACK_REDIS_URL"]), name
        for key, value in env.items():
            monkeypatch.setenv(key, "s" * 48 if key == "BACKTRACK_SECRET" else str(value))
        assert ChannelSettings().environment == "production"


def test_compose_services_wait_for_a_healthy_redis(compose: dict[str, Any]) -> None:
    """Every app service starts only once Redis is healthy, and checks its own /readyz port."""
    redis_check = " ".join(compose["services"]["redis"]["healthcheck"]["test"])
    assert re.search(r"REDISCLI_AUTH=\S+ redis-cli --user \S+ ping \| grep -q PONG", redis_check)
    for name, service in _app_services(compose).items():
        assert service["depends_on"]["redis"]["condition"] == "service_healthy", name
        port = int(service["environment"][_env_name(PORT_SETTING[_module(service["command"])])])
        check = " ".join(service["healthcheck"]["test"])
        assert f"http://127.0.0.1:{port}/readyz" in check, name
        assert service["ports"] == [f"{port}:{port}"], name


def test_prescribers_run_two_behind_leases_and_a_disruption_budget(
    compose: dict[str, Any],
) -> None:
    """Two prescribers share partitions by lease: distinct ports in compose, 2 replicas in k8s."""
    prescribers = [
        s for s in _app_services(compose).values() if _module(s["command"]) == "services.prescriber"
    ]
    assert len(prescribers) == 2
    ports = {s["environment"]["BACKTRACK_CLINIC_PORT"] for s in prescribers}
    assert len(ports) == 2
    spec = _named("Deployment", "backtrack-prescriber")["spec"]
    assert spec["replicas"] == 2
    assert _container({"spec": spec})["resources"]["limits"]["memory"] == "512Mi"
    pdb = _named("PodDisruptionBudget", "backtrack-prescriber")["spec"]
    assert pdb["minAvailable"] < spec["replicas"]
    assert pdb["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()


def test_compose_redis_uses_a_profile_file_and_a_named_volume(compose: dict[str, Any]) -> None:
    """Redis runs a mounted deploy/redis profile (default everysec) through redis-start.sh,
    with the password from the environment and /data in a named volume."""
    service = compose["services"]["redis"]
    shell, script, config = service["command"]
    assert shell == "sh"
    mounts = {v["target"]: v for v in service["volumes"]}
    assert mounts[script]["source"] == "./redis/redis-start.sh"
    assert mounts[script]["read_only"] is True
    assert service["environment"]["REDIS_PASSWORD"].startswith("${BACKTRACK_REDIS_PASSWORD:?")
    assert mounts[config]["type"] == "bind"
    assert mounts[config]["read_only"] is True
    source = mounts[config]["source"]
    assert "${BACKTRACK_REDIS_PROFILE:-everysec}" in source
    for profile in ("everysec", "always"):
        path = DEPLOY / source.replace("${BACKTRACK_REDIS_PROFILE:-everysec}", profile)
        assert path.resolve().is_file(), path
    assert mounts["/data"]["type"] == "volume"
    assert mounts["/data"]["source"] in compose["volumes"]


@pytest.mark.parametrize("profile", ["everysec", "always"])
def test_redis_profiles_keep_the_log(profile: str) -> None:
    """Both profiles: AOF on, the named fsync policy, noeviction, fsync kept during rewrites."""
    conf = _redis_conf(DEPLOY / "redis" / f"redis-{profile}.conf")
    assert conf["appendonly"] == "yes"
    assert conf["appendfsync"] == profile
    assert conf["maxmemory-policy"] == "noeviction"
    assert conf["no-appendfsync-on-rewrite"] == "no"
    assert conf["aof-use-rdb-preamble"] == "yes"
    assert conf["save"] == '""'
    assert conf["dir"] == "/data"
    assert conf["protected-mode"] == "yes"
    assert conf["user"] == "default off"


def test_redis_profiles_differ_only_in_fsync() -> None:
    """Apart from appendfsync, the two profiles set exactly the same directives."""
    everysec = _redis_conf(DEPLOY / "redis" / "redis-everysec.conf")
    always = _redis_conf(DEPLOY / "redis" / "redis-always.conf")
    assert {**everysec, "appendfsync": "always"} == always


@contextlib.contextmanager
def _serve(profile: str, tmp_path: Path) -> Iterator[redis.Redis]:
    """The profile started by redis-start.sh, and a client of an operator's own user
    (the services' user may not run CONFIG)."""
    admin = secrets.token_hex(16)
    extra = ("--user", "admin", "on", f">{admin}", "~*", "&*", "+@all")
    with shipped(profile, tmp_path, secrets.token_hex(32), extra) as port:
        client = redis.Redis(port=port, username="admin", password=admin, decode_responses=True)
        with client:
            yield client


@pytest.mark.parametrize("profile", ["everysec", "always"])
def test_redis_profiles_load_in_a_real_server(profile: str, tmp_path: Path) -> None:
    """A real redis-server starts with each profile and reports its durability settings."""
    with _serve(profile, tmp_path) as client:
        assert client.config_get("appendfsync")["appendfsync"] == profile
        assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        assert client.info("persistence")["aof_enabled"] == 1


def test_kubernetes_redis_runs_the_everysec_profile() -> None:
    """The Redis StatefulSet runs verbatim copies of redis-everysec.conf and redis-start.sh,
    the login from the Secret backtrack-redis, and a PVC at /data."""
    data = _named("ConfigMap", "redis-config")["data"]
    for key, name in (("redis.conf", "redis-everysec.conf"), ("redis-start.sh", "redis-start.sh")):
        original = (DEPLOY / "redis" / name).read_text()
        strip = "\n".join(line.rstrip() for line in data[key].splitlines())
        assert strip == "\n".join(line.rstrip() for line in original.splitlines()), (
            f"paste deploy/redis/{name} into deploy/k8s/base/redis.yaml"
        )
    statefulset = _named("StatefulSet", "redis")
    container = _container(statefulset)
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    config = mounts["config"]
    assert container["command"] == ["sh", f"{config}/redis-start.sh", f"{config}/redis.conf"]
    env = _pod_env(container)
    assert env["REDIS_PASSWORD"]["secretKeyRef"] == {"name": "backtrack-redis", "key": "password"}
    assert env["REDIS_USERNAME"]["secretKeyRef"] == {"name": "backtrack-redis", "key": "username"}
    assert "REDISCLI_AUTH" in " ".join(container["readinessProbe"]["exec"]["command"])
    claims = [c["metadata"]["name"] for c in statefulset["spec"]["volumeClaimTemplates"]]
    assert mounts[claims[0]] == "/data"
    assert _named("Service", "redis")["spec"]["ports"][0]["targetPort"] == 6379


def test_redis_network_policy_admits_every_backtrack_pod() -> None:
    """The Redis NetworkPolicy covers the Redis pods and lets each backtrack Deployment in."""
    policy = _named("NetworkPolicy", "redis")["spec"]
    redis_labels = _named("StatefulSet", "redis")["spec"]["template"]["metadata"]["labels"]
    assert _selects(policy["podSelector"]["matchLabels"], redis_labels)
    (allowed,) = policy["ingress"][0]["from"]
    for deployment in _of_kind("Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert _selects(allowed["podSelector"]["matchLabels"], labels)


def test_pods_run_non_root_read_only_without_capabilities() -> None:
    """Every pod runs non-root (the image's uid for backtrack), read-only, all caps dropped."""
    for workload in _workloads():
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        container = _container(workload)
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        assert container["resources"]["requests"]
        assert container["resources"]["limits"]["memory"]
    for deployment in _of_kind("Deployment"):
        assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == APP_UID


def test_each_pdb_selects_exactly_its_own_workload() -> None:
    """Each PodDisruptionBudget keeps one pod of its own Deployment and selects no other's."""
    budgets = _of_kind("PodDisruptionBudget")
    assert {b["metadata"]["name"] for b in budgets} == {"backtrack-ingest", "backtrack-prescriber"}
    for pdb in budgets:
        assert pdb["spec"]["minAvailable"] == 1
        selector = pdb["spec"]["selector"]["matchLabels"]
        matched = [
            w["metadata"]["name"]
            for w in _workloads()
            if _selects(selector, w["spec"]["template"]["metadata"]["labels"])
        ]
        name = pdb["metadata"]["name"]
        assert matched == [name]
        assert _named("Deployment", name)["spec"]["replicas"] > pdb["spec"]["minAvailable"]


def test_autoscalers_target_existing_deployments() -> None:
    """The HPA and the KEDA ScaledObject target existing Deployments, never the prescriber."""
    deployments = {d["metadata"]["name"]: d for d in _of_kind("Deployment")}
    scalers = _of_kind("HorizontalPodAutoscaler") + _of_kind("ScaledObject")
    assert {s["kind"] for s in scalers} == {"HorizontalPodAutoscaler", "ScaledObject"}
    for scaler in scalers:
        target = scaler["spec"]["scaleTargetRef"]
        assert target["name"] in deployments, target
        assert target["name"] != "backtrack-prescriber"
    (hpa,) = _of_kind("HorizontalPodAutoscaler")
    target = deployments[hpa["spec"]["scaleTargetRef"]["name"]]
    # CPU utilisation is measured against the request: without one the HPA cannot scale.
    assert _container(target)["resources"]["requests"]["cpu"]
    assert hpa["spec"]["minReplicas"] >= 2


def test_lag_scaler_watches_every_rx_feed_of_the_webhook_group() -> None:
    """One redis-streams trigger per rx feed, on the channels' group, at the Redis Service."""
    (scaled,) = _of_kind("ScaledObject")
    partitions = int(_named("ConfigMap", "backtrack-settings")["data"]["BACKTRACK_PARTITIONS"])
    triggers = scaled["spec"]["triggers"]
    assert {t["type"] for t in triggers} == {"redis-streams"}
    assert sorted(t["metadata"]["stream"] for t in triggers) == sorted(Keys(partitions).rxfeeds())
    assert {t["metadata"]["consumerGroup"] for t in triggers} == {WEBHOOK_GROUP}
    assert {t["authenticationRef"]["name"] for t in triggers} == {"backtrack-redis"}
    (auth,) = _of_kind("TriggerAuthentication")
    assert auth["metadata"]["name"] == "backtrack-redis"
    refs = {(r["parameter"], r["name"], r["key"]) for r in auth["spec"]["secretTargetRef"]}
    assert refs == {
        ("username", "backtrack-redis", "username"),
        ("password", "backtrack-redis", "password"),
    }
    assert all(int(t["metadata"]["lagCount"]) > 0 for t in triggers)
    namespace = yaml.safe_load((K8S / "keda" / "kustomization.yaml").read_text())["namespace"]
    assert {t["metadata"]["address"] for t in triggers} == {
        f"redis.{namespace}.svc.cluster.local:6379"
    }
    assert scaled["spec"]["minReplicaCount"] >= 1  # the subscriptions API and SSE stay up


def test_dockerfile_is_multi_stage_pinned_and_non_root() -> None:
    """Two stages, install pinned by constraints.txt without dev extras, a numeric non-root USER."""
    text = _dockerfile()
    stages = re.findall(r"(?m)^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text)
    assert len(stages) >= 2
    assert re.search(r"(?m)^ARG PYTHON_IMAGE=python:3\.11-slim$", text)
    installs = [i.strip() for i in re.findall(r"pip install ([^\n\\&]+)", text)]
    assert installs == ["-c constraints.txt ."]
    assert "[dev]" not in text
    assert "COPY --from=builder /opt/venv /opt/venv" in text
    users = re.findall(r"(?m)^USER\s+(\S+)", text)
    assert users
    assert users[-1] == f"{APP_UID}:{APP_UID}"
    exposed = {int(p) for p in re.findall(r"(?m)^EXPOSE\s+(.+)$", text)[0].split()}
    assert exposed == {_default(field) for field in PORT_SETTING.values()}
    cmd = re.findall(r"(?m)^CMD\s+(\[.+\])$", text)[-1]
    assert _module(yaml.safe_load(cmd)) in PORT_SETTING


def test_dockerfile_copies_what_the_package_needs() -> None:
    """The builder copies pyproject, constraints, the README it names and every package dir."""
    copied = set()
    for line in re.findall(r"(?m)^COPY (?!--from)(.+)$", _dockerfile()):
        copied |= {p.rstrip("/") for p in line.split()[:-1]}
    assert {"pyproject.toml", "constraints.txt", "README.md", "shared", "services"} <= copied
    for name in copied:
        assert (ROOT / name).exists(), name


def test_dockerignore_keeps_local_state_out_and_sources_in() -> None:
    """The build context drops the venv, git, local data and caches, never the sources it copies."""
    patterns = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".venv", ".git", ".backtrack", ".env", "**/__pycache__"} <= patterns
    assert not patterns & {"shared", "services", "pyproject.toml", "constraints.txt", "README.md"}


def _egress_blocks() -> list[dict[str, Any]]:
    policy = _named("NetworkPolicy", "backtrack-channels-egress")["spec"]
    peers = [peer for rule in policy["egress"] for peer in rule["to"]]
    return [peer["ipBlock"] for peer in peers if "ipBlock" in peer]


def _egress_allows(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    for block in _egress_blocks():
        if ip.version != ipaddress.ip_network(block["cidr"]).version:
            continue
        if ip in ipaddress.ip_network(block["cidr"]) and not any(
            ip in ipaddress.ip_network(cidr) for cidr in block.get("except", [])
        ):
            return True
    return False


def test_channels_egress_policy_selects_the_channels_and_opens_only_what_they_need() -> None:
    """DNS to kube-dns, Redis, and TCP 80/443 to addresses: nothing else leaves a channels pod."""
    policy = _named("NetworkPolicy", "backtrack-channels-egress")["spec"]
    channels = _named("Deployment", "backtrack-channels")["spec"]["template"]["metadata"]["labels"]
    assert _selects(policy["podSelector"]["matchLabels"], channels)
    for other in ("backtrack-ingest", "backtrack-prescriber"):
        labels = _named("Deployment", other)["spec"]["template"]["metadata"]["labels"]
        assert not _selects(policy["podSelector"]["matchLabels"], labels)
    assert policy["policyTypes"] == ["Egress"]
    ports = {(p["port"], p["protocol"]) for rule in policy["egress"] for p in rule["ports"]}
    assert ports == {(53, "UDP"), (53, "TCP"), (6379, "TCP"), (80, "TCP"), (443, "TCP")}
    redis_labels = _named("StatefulSet", "redis")["spec"]["template"]["metadata"]["labels"]
    redis_port = [{"port": 6379, "protocol": "TCP"}]
    (redis_rule,) = [r for r in policy["egress"] if r["ports"] == redis_port]
    assert _selects(redis_rule["to"][0]["podSelector"]["matchLabels"], redis_labels)


@pytest.mark.parametrize(
    "address",
    [
        *(str(a) for a in METADATA),
        "10.96.0.1",  # a typical Service address
        "10.244.1.7",  # a typical pod address
        "172.20.0.5",
        "192.168.0.10",
        "100.64.0.1",
        "127.0.0.1",
        "169.254.20.10",
        "::1",
        "::ffff:10.0.0.1",
        "2002:a9fe:a9fe::1",
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",
        "64:ff9b:1::a00:1",
        "fd12:3456::1",
        "fe80::1",
    ],
)
def test_channels_egress_excludes_private_and_metadata_addresses(address: str) -> None:
    """The policy's internet rule excludes every metadata address of the code and the private
    ranges a cluster uses, so a webhook check that failed would still be stopped."""
    assert not _egress_allows(address)


@pytest.mark.parametrize("address", ["93.184.216.34", "1.1.1.1", "2606:2800:220:1::1"])
def test_channels_egress_allows_public_addresses(address: str) -> None:
    """Public clinic endpoints remain reachable."""
    assert _egress_allows(address)
