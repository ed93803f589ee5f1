"""deploy/kubernetes/: every manifest valid for a current Kubernetes, and consistent with the image.

No cluster runs here. `kubernetes-validate` checks each object against the OpenAPI schemas of a
Kubernetes release that it ships inside the package (no network), in strict mode: a misspelled
or misplaced field fails. The other tests check what a schema cannot: that the probes ask the
container's port with a Host the site accepts, that the pods run the Dockerfile's command as its
user, that the Job runs what docker/entrypoint.sh runs, that every setting is a documented one,
that the pool sizes fit PostgreSQL, and that no real secret is committed.
"""

import json
import re
import socket
from pathlib import Path
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import all_versions

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "kubernetes"
# The newest release kubernetes-validate 1.37.0 (pyproject's pin) ships schemas for.
KUBERNETES_VERSION = "1.37.0"
# PostgreSQL's default, as in the bundled `db` service; 3 of them are for superusers.
POSTGRES_MAX_CONNECTIONS = 100
POSTGRES_RESERVED = 3
PLACEHOLDER = "CHANGE-ME"


def manifests() -> list[tuple[str, dict]]:
    """(file name, object) for every Kubernetes object in deploy/kubernetes/."""
    found = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                found.append((path.name, document))
    return found


def objects(kind: str) -> list[dict]:
    return [obj for _, obj in manifests() if obj["kind"] == kind]


def one(kind: str, name: str | None = None) -> dict:
    found = [obj for obj in objects(kind) if name is None or obj["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def web_container() -> dict:
    (container,) = one("Deployment")["spec"]["template"]["spec"]["containers"]
    return container


def job_container() -> dict:
    (container,) = one("Job")["spec"]["template"]["spec"]["containers"]
    return container


def dockerfile_instruction(name: str) -> str:
    """The text of the Dockerfile's last `name` instruction (continuation lines joined)."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    found = re.findall(rf"^{name}\s+(.+)$", text, flags=re.MULTILINE)
    assert found, f"no {name} in the Dockerfile"
    return found[-1].strip()


def documented_settings() -> set[str]:
    """Variable names in the README's Settings table and in docker-compose.yml."""
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Settings", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for line in table.splitlines():
        if not line.startswith("| `"):
            continue
        cell = line.split("|")[1]
        listed = re.findall(r"`([A-Z_][A-Z0-9_]*)`", cell)
        first = listed[0]
        names.add(first)
        for short in listed[1:]:
            if not short.startswith("_"):
                names.add(short)
                continue
            # `DJANGO_SUPERUSER_USERNAME` / `_EMAIL`: the first name's stem and this ending.
            parts = first.split("_")
            names.update("_".join(parts[:i]) + short for i in range(1, len(parts) + 1))
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for service in compose["services"].values():
        names.update(service.get("environment", {}))
    return names


def setting_names(container: dict) -> set[str]:
    """Every variable a container gets: its env, its ConfigMap's and its Secret's keys."""
    names = {entry["name"] for entry in container.get("env", [])}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            names.update(one("ConfigMap", source["configMapRef"]["name"])["data"])
        if "secretRef" in source:
            names.update(one("Secret", source["secretRef"]["name"])["stringData"])
    return names


def test_validation_uses_the_newest_kubernetes_the_pinned_package_knows():
    assert all_versions()[-1] == KUBERNETES_VERSION
    pyproject = (ROOT / "pyproject.toml").read_text()
    pin = re.search(r'"kubernetes-validate==([^"]+)"', pyproject)
    assert pin and kubernetes_validate.__version__ == pin.group(1)


@pytest.mark.parametrize(
    "name,obj", manifests(), ids=lambda v: v if isinstance(v, str) else v["metadata"]["name"]
)
def test_every_manifest_is_valid_for_kubernetes_in_strict_mode(name, obj, monkeypatch):
    # Offline: the schemas come from the installed package; any connection attempt fails here.
    def no_network(*args, **kwargs):
        raise AssertionError("kubernetes-validate tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    validated = kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    assert validated == KUBERNETES_VERSION.rsplit(".", 1)[0], name


def test_strict_validation_rejects_a_misspelled_field():
    """The check above would catch a typo: strict mode refuses fields the schema lacks."""
    deployment = one("Deployment")
    broken = json.loads(json.dumps(deployment))
    probe = broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    probe["periodSecond"] = probe.pop("periodSeconds")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_kustomization_applies_every_manifest_but_the_secret_template():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    files = {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == files - {"secret.example.yaml"}
    # One image for the web pods and the Job, set in one place.
    (image,) = kustomization["images"]
    assert image["name"] == web_container()["image"].split(":")[0]


def test_postgres_and_redis_are_external_services_not_run_in_the_cluster():
    kinds = {obj["kind"] for _, obj in manifests()}
    assert "StatefulSet" not in kinds and "PersistentVolumeClaim" not in kinds
    external = {
        svc["metadata"]["name"]
        for svc in objects("Service")
        if svc["spec"].get("type") == "ExternalName"
    }
    assert external == {"chat-postgres", "chat-redis"}
    secret = one("Secret")["stringData"]
    assert urlsplit(secret["DATABASE_URL"]).hostname == "chat-postgres"
    assert urlsplit(secret["REDIS_URL"]).hostname == "chat-redis"


def test_probes_ask_healthz_on_the_container_port_with_a_host_the_site_accepts():
    container = web_container()
    (port,) = container["ports"]
    allowed = one("ConfigMap")["data"]["DJANGO_ALLOWED_HOSTS"].split(",")
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = container[kind]["httpGet"]
        assert probe["path"] == "/healthz", kind
        assert probe["port"] in (port["name"], port["containerPort"]), kind
        hosts = [h["value"] for h in probe["httpHeaders"] if h["name"].lower() == "host"]
        # docker/healthcheck.py's choice: the first allowed host ("*" and a leading dot aside).
        assert hosts == [allowed[0].strip().lstrip(".")], kind
    # The port daphne listens on (the CMD's -p) is the container's and the Service's.
    args = container["args"]
    assert int(args[args.index("-p") + 1]) == port["containerPort"] == 8000
    service = one("Service", "chat-web")
    assert service["spec"]["ports"][0]["targetPort"] in (port["name"], port["containerPort"])
    assert service["spec"]["selector"].items() <= (
        one("Deployment")["spec"]["template"]["metadata"]["labels"].items()
    )


def test_the_web_pods_run_the_dockerfile_command_behind_its_entrypoint():
    container = web_container()
    assert "command" not in container, "the image's ENTRYPOINT (docker/entrypoint.sh) must stay"
    assert container["args"] == json.loads(dockerfile_instruction("CMD"))


def test_the_migrations_job_runs_what_the_entrypoint_runs_with_the_web_image():
    entrypoint = (ROOT / "docker" / "entrypoint.sh").read_text()
    expected = [line.strip() for line in entrypoint.splitlines() if line.startswith("python ")]
    assert expected == [
        'python manage.py wait_for_services --timeout "${CHAT_STARTUP_WAIT:-60}"',
        "python manage.py run_locked migrate --noinput",
        "python manage.py run_locked purge_deleted_text",
        "python manage.py run_locked purge_uploads",
        "python manage.py run_locked render_messages",
        "python manage.py run_locked ensure_superuser",
    ]
    job = job_container()
    shell, flag, script = job["command"]
    assert (shell, flag) == ("/bin/sh", "-c")
    assert [line for line in script.splitlines() if line.startswith("python ")] == expected
    assert "set -eu" in script
    assert job["image"] == web_container()["image"]
    assert one("Job")["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    # The same settings, so the Job migrates the database the web pods use.
    assert job["envFrom"] == web_container()["envFrom"]


def test_every_setting_the_pods_get_is_documented():
    documented = documented_settings()
    for container in (web_container(), job_container()):
        names = setting_names(container)
        assert names, container["name"]
        assert names <= documented, f"not in README Settings or compose: {names - documented}"
        # DEBUG stays off whatever the ConfigMap says, as in docker-compose.yml.
        env = {entry["name"]: entry.get("value") for entry in container["env"]}
        assert env["DJANGO_DEBUG"] == "0"


def test_no_secret_is_committed():
    secret = one("Secret")
    assert "data" not in secret, "base64 `data` hides what is committed: use stringData"
    for key, value in secret["stringData"].items():
        if "://" in value:
            # A URL: its password is the placeholder, nothing else in it is secret.
            assert urlsplit(value).password == PLACEHOLDER, key
        else:
            assert value == PLACEHOLDER, key
    # Nothing secret-looking in the ConfigMap, which is committed as it is deployed.
    for key, value in one("ConfigMap")["data"].items():
        assert not re.search(r"SECRET|PASSWORD|TOKEN|_KEY$", key), key
        assert "://" not in value or urlsplit(value).password is None, key
    # The web pods and the Job read the Secret by the name the template gives it.
    for container in (web_container(), job_container()):
        refs = [s["secretRef"]["name"] for s in container["envFrom"] if "secretRef" in s]
        assert refs == [secret["metadata"]["name"]]


def test_pods_run_as_the_image_user_with_a_read_only_root():
    uid = int(re.search(r"useradd .*--uid (\d+)", (ROOT / "Dockerfile").read_text()).group(1))
    assert dockerfile_instruction("USER") == "chat"
    for kind in ("Deployment", "Job"):
        pod = one(kind)["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == uid
        (container,) = pod["containers"]
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        # The one writable place: /tmp, an emptyDir.
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert list(mounts) == ["/tmp"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]]


def test_a_stopping_pod_leaves_the_endpoints_before_daphne_closes_its_sockets():
    pod = one("Deployment")["spec"]["template"]["spec"]
    command = web_container()["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    delay = int(command[1])
    assert 5 <= delay
    # Room after the sleep for daphne to close its sockets and exit (it waits up to 10 s).
    assert pod["terminationGracePeriodSeconds"] >= delay + 15


def test_every_pod_at_once_stays_within_postgres_connections():
    per_pod = int(one("ConfigMap")["data"]["DATABASE_POOL_MAX_SIZE"])
    hpa = one("HorizontalPodAutoscaler")
    surge = one("Deployment")["spec"]["strategy"]["rollingUpdate"]["maxSurge"]
    # The Job's migration holds two (run_locked's lock and the migration's own), and a person
    # needs one for `manage.py` or psql.
    at_most = (hpa["spec"]["maxReplicas"] + surge) * per_pod + 2 + 1
    assert at_most <= POSTGRES_MAX_CONNECTIONS - POSTGRES_RESERVED
    assert hpa["spec"]["minReplicas"] >= 2
    assert hpa["spec"]["scaleTargetRef"]["name"] == one("Deployment")["metadata"]["name"]
    assert "replicas" not in one("Deployment")["spec"], "the HPA owns the replica count"


def test_the_ingress_keeps_websockets_open_as_the_tested_nginx_does():
    ingress = one("Ingress")
    notes = ingress["metadata"]["annotations"]
    common = (ROOT / "deploy" / "nginx-common.conf").read_text()
    prefix = "nginx.ingress.kubernetes.io/"
    for directive in ("proxy_read_timeout", "proxy_send_timeout", "proxy_connect_timeout"):
        tested = int(re.search(rf"{directive} (\d+)s;", common).group(1))
        assert int(notes[prefix + directive.replace("_", "-")]) == tested, directive
    # Above daphne's ping interval (20 s: chatsite.serve keeps daphne's default), so a live but
    # quiet socket is never cut.
    assert int(notes[prefix + "proxy-read-timeout"]) > 20
    body = re.search(r"client_max_body_size (\w+);", common).group(1)
    assert notes[prefix + "proxy-body-size"] == body
    assert not any("affinity" in key or "sticky" in key for key in notes)
    host = one("ConfigMap")["data"]["DJANGO_ALLOWED_HOSTS"].split(",")[0]
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == host
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == one("Service", "chat-web")["metadata"]["name"]
    assert f"https://{host}" in one("ConfigMap")["data"]["DJANGO_CSRF_TRUSTED_ORIGINS"]


def test_the_readme_says_how_to_apply_and_that_no_cluster_runs_here():
    howto = (K8S / "README.md").read_text()
    assert "No cluster runs here" in howto.split("\n\n")[0] + howto.split("\n\n")[1]
    assert "kubectl apply -k deploy/kubernetes" in howto
    for step in ("podman build", "kubectl scale", "secret.example.yaml"):
        assert step in howto, step
