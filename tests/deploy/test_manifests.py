"""The Kubernetes manifests (deploy/k8s), checked statically against the app, the settings and each other."""

from __future__ import annotations

import pytest
import yaml

from tidings.cli import main as cli_main
from tidings.observability import metrics

from .support import (
    K8S,
    ROLES,
    TRAFFIC_ROLES,
    Doc,
    config_value,
    container,
    k8s_objects,
    kustomization,
    load_all,
    objects_of,
    pod_labels,
    pod_spec,
    role_of,
    selects,
    served,
    setting_names,
    store_variables,
    yaml_files,
)

WORKLOADS = ("Deployment",)
SELECTED = ("Service", "PodDisruptionBudget")


def test_every_yaml_file_parses() -> None:
    """Every YAML file under deploy/ loads and holds at least one document."""
    assert yaml_files(), "no YAML found under deploy/"
    for path in yaml_files():
        assert load_all(path), f"{path} is empty"


def test_kustomization_lists_every_manifest() -> None:
    """`kubectl apply -k deploy/k8s` applies every manifest in the folder, and names no missing file."""
    listed = kustomization()["resources"]
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(listed) == sorted(on_disk)
    for name in listed:
        assert (K8S / name).is_file()


def test_every_object_has_api_version_kind_and_name() -> None:
    """Each object carries apiVersion, kind and metadata.name, and no two objects share a kind and name."""
    seen: set[tuple[str, str]] = set()
    for doc in k8s_objects():
        assert doc.get("apiVersion"), doc
        assert doc.get("kind"), doc
        key = (doc["kind"], doc["metadata"]["name"])
        assert key not in seen, f"{key} defined twice"
        seen.add(key)


def test_one_deployment_per_role_running_that_role() -> None:
    """There is a Deployment for api, gateway and worker, each running `tidings <role>`, a real CLI command."""
    deployments = objects_of("Deployment")
    assert sorted(role_of(d) for d in deployments.values()) == sorted(ROLES)
    for name, deployment in deployments.items():
        role = role_of(deployment)
        assert pod_labels(deployment)["app.kubernetes.io/component"] == role, name
        assert selects(deployment["spec"]["selector"]["matchLabels"], pod_labels(deployment)), name
        with pytest.raises(SystemExit) as exited:
            cli_main([role, "--help"])
        assert exited.value.code == 0


async def test_probes_are_paths_the_app_serves() -> None:
    """Every role's liveness (/healthz) and readiness (/readyz) answer 200 on the app that role builds."""
    containers = {role_of(d): container(d) for d in objects_of("Deployment").values()}
    kinds = ("startupProbe", "livenessProbe", "readinessProbe")
    probes = {role: [box[kind]["httpGet"] for kind in kinds] for role, box in containers.items()}
    answers = await served(probe["path"] for found in probes.values() for probe in found)
    for role, (startup, liveness, readiness) in probes.items():
        assert (startup["path"], liveness["path"], readiness["path"]) == ("/healthz", "/healthz", "/readyz")
        declared = {port["name"] for port in containers[role]["ports"]}
        for probe in (startup, liveness, readiness):
            assert answers[role].statuses[probe["path"]] == 200, (role, probe)
            assert probe["port"] in declared, (role, probe)


def test_every_container_has_requests_and_limits() -> None:
    """Every container asks for CPU and memory and is capped, so the scheduler and the HPA have numbers."""
    for name, deployment in objects_of("Deployment").items():
        resources = container(deployment)["resources"]
        for bound in ("requests", "limits"):
            assert set(resources[bound]) >= {"cpu", "memory"}, (name, bound)


def test_grace_period_outlasts_prestop_and_drain() -> None:
    """A pod gets its preStop sleep and the whole drain before SIGKILL: two steps of TIDINGS_DRAIN_TIMEOUT each."""
    drain = 2 * float(config_value("TIDINGS_DRAIN_TIMEOUT"))  # the worker's batch, then in-flight requests
    for name, deployment in objects_of("Deployment").items():
        grace = pod_spec(deployment)["terminationGracePeriodSeconds"]
        assert grace > _prestop_sleep(container(deployment)) + drain, name


def test_served_deployments_leave_endpoints_before_sigterm() -> None:
    """api and gateway sleep in preStop, so endpoints are removed before the drain starts refusing work."""
    for deployment in objects_of("Deployment").values():
        if role_of(deployment) in TRAFFIC_ROLES:
            assert _prestop_sleep(container(deployment)) >= 1, role_of(deployment)


def test_services_and_pdbs_select_exactly_their_deployment() -> None:
    """Each Service and PodDisruptionBudget selects one Deployment's pods; only api and gateway have a Service."""
    deployments = objects_of("Deployment")
    covered: dict[str, set[str]] = {kind: set() for kind in SELECTED}
    for kind in SELECTED:
        for name, obj in objects_of(kind).items():
            selector = obj["spec"]["selector"]
            selector = selector.get("matchLabels", selector)
            matched = [d for d, dep in deployments.items() if selects(selector, pod_labels(dep))]
            assert len(matched) == 1, (kind, name, matched)
            covered[kind].update(matched)
    assert covered["PodDisruptionBudget"] == set(deployments)
    served_roles = {n for n, d in deployments.items() if role_of(d) in TRAFFIC_ROLES}
    assert covered["Service"] == served_roles


def test_service_ports_name_container_ports() -> None:
    """Each Service forwards to a port its pods declare, and the gateway's has no session affinity."""
    deployments = list(objects_of("Deployment").values())
    for name, service in objects_of("Service").items():
        (pods,) = [d for d in deployments if selects(service["spec"]["selector"], pod_labels(d))]
        declared = {p["name"] for p in container(pods)["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= declared, name
    assert objects_of("Service")["tidings-gateway"]["spec"].get("sessionAffinity", "None") == "None"


def test_hpas_scale_deployments_that_exist() -> None:
    """Every role has an HPA aimed at its Deployment, with a floor of 2 and a CPU target."""
    deployments = objects_of("Deployment")
    targets = set()
    for name, hpa in objects_of("HorizontalPodAutoscaler").items():
        ref = hpa["spec"]["scaleTargetRef"]
        assert (ref["kind"], ref["apiVersion"]) == ("Deployment", "apps/v1"), name
        assert ref["name"] in deployments, name
        assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"], name
        assert any(m["type"] == "Resource" and m["resource"]["name"] == "cpu" for m in hpa["spec"]["metrics"])
        targets.add(ref["name"])
    assert targets == set(deployments)


def test_custom_metrics_component_patches_real_hpas_with_real_metrics() -> None:
    """The opt-in component patches HPAs that exist, with metrics that Tidings exports."""
    folder = K8S / "components" / "custom-metrics"
    component = yaml.safe_load((folder / "kustomization.yaml").read_text())
    assert component["kind"] == "Component"
    hpas = objects_of("HorizontalPodAutoscaler")
    for patch in component["patches"]:
        assert patch["target"]["name"] in hpas
        for op in yaml.safe_load((folder / patch["path"]).read_text()):
            metric = op["value"][op["value"]["type"].lower()]["metric"]["name"]
            assert metric.startswith("tidings_")
            assert hasattr(metrics, metric.removeprefix("tidings_"))


def test_pods_run_locked_down() -> None:
    """Containers run as non-root, with a read-only root filesystem, no privilege escalation and no capabilities."""
    for name, deployment in objects_of("Deployment").items():
        pod, box = pod_spec(deployment), container(deployment)
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] != 0, name
        context = box["securityContext"]
        assert context["readOnlyRootFilesystem"] is True, name
        assert context["allowPrivilegeEscalation"] is False, name
        assert context["capabilities"]["drop"] == ["ALL"], name
        assert any(m["mountPath"] == "/tmp" for m in box["volumeMounts"]), name  # the one writable path


def test_config_and_secret_hold_real_settings() -> None:
    """ConfigMap and Secret keys are all variables Tidings reads; the Secret holds the token and backend URLs."""
    known = setting_names() | store_variables()
    config = objects_of("ConfigMap")["tidings-config"]["data"]
    secret = objects_of("Secret")["tidings-secrets"]["stringData"]
    assert set(config) <= known, set(config) - known
    assert set(secret) <= known, set(secret) - known
    assert set(secret) >= {"TIDINGS_ADMIN_TOKEN", "TIDINGS_STORE", "TIDINGS_BROKER"}
    assert not set(config) & set(secret)
    for name, deployment in objects_of("Deployment").items():
        sources = container(deployment)["envFrom"]
        assert {"configMapRef": {"name": "tidings-config"}} in sources, name
        assert {"secretRef": {"name": "tidings-secrets"}} in sources, name
    declared = {
        p["containerPort"] for d in objects_of("Deployment").values() for p in container(d).get("ports", [])
    }
    # The HTTP port, and the metrics listener the role commands open at TIDINGS_PORT + 1000.
    assert "TIDINGS_METRICS_PORT" not in config
    assert declared == {int(config["TIDINGS_PORT"]), int(config["TIDINGS_PORT"]) + 1000}


def test_ingress_routes_live_paths_to_gateways() -> None:
    """The ingress sends /v1/ws and /v1/stream to the gateway Service and the rest to the API Service."""
    services = objects_of("Service")
    routes: dict[str, str] = {}
    for ingress in objects_of("Ingress").values():
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                assert backend["name"] in services
                assert backend["port"]["name"] in {
                    p["name"] for p in services[backend["name"]]["spec"]["ports"]
                }
                routes[path["path"]] = backend["name"]
    assert routes == {"/v1/ws": "tidings-gateway", "/v1/stream": "tidings-gateway", "/": "tidings-api"}


def test_no_service_exposes_the_metrics_port() -> None:
    """Every pod declares its metrics port, and no Service (so no ingress route) forwards to it."""
    for name, deployment in objects_of("Deployment").items():
        assert "metrics" in {p["name"] for p in container(deployment)["ports"]}, name
    for name, service in objects_of("Service").items():
        assert all(p["targetPort"] != "metrics" for p in service["spec"]["ports"]), name


def _prestop_sleep(box: Doc) -> float:
    command = box.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command")
    if command is None:
        return 0.0
    assert command[0] == "sleep", command
    return float(command[1])
