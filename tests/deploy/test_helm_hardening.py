"""What a platform team checks in a production chart, rendered by Helm's own engine: the pod
starts under any release name, is probed and stopped the way the proxy needs, gets the memory
the benchmarks measured, spreads its replicas, can be fenced by NetworkPolicies, and the values
schema refuses what would break it or put a credential in clear."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from helm_python import HelmError

from condaproxy.rules.config_text import ConfigError
from tests.cluster.test_helm_replicas import SHARED
from tests.deploy.test_helm import CHART, ROOT, by_kind, load_config, named, render, validate

UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9}


def quantity(text: str | int) -> int:
    number, unit = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(text)).groups()  # type: ignore[union-attr]
    return int(float(number) * UNITS.get(unit, 1))


def proxy_pod(docs: list[dict[str, Any]], release: str = "cache") -> dict[str, Any]:
    deployment = named(docs, "Deployment", f"{release}-condaproxy")
    return dict(deployment["spec"]["template"]["spec"])


def service_link_env(service: dict[str, Any]) -> dict[str, str]:
    """The variables the kubelet gives every pod of the namespace for a Service (enableServiceLinks
    defaults to true): <NAME>_SERVICE_HOST, <NAME>_PORT_<port>_TCP and the rest."""
    name = service["metadata"]["name"].upper().replace("-", "_")
    ip = "10.96.0.10"
    env = {f"{name}_SERVICE_HOST": ip}
    for i, port in enumerate(service["spec"]["ports"]):
        number, proto = port["port"], port.get("protocol", "TCP")
        if i == 0:
            env |= {f"{name}_SERVICE_PORT": str(number), f"{name}_PORT": f"tcp://{ip}:{number}"}
        if "name" in port:
            env[f"{name}_SERVICE_PORT_{port['name'].upper().replace('-', '_')}"] = str(number)
        base = f"{name}_PORT_{number}_{proto}"
        env |= {base: f"tcp://{ip}:{number}", f"{base}_PROTO": proto.lower()}
        env |= {f"{base}_PORT": str(number), f"{base}_ADDR": ip}
    return env


def test_a_release_named_condaproxy_starts_although_kubernetes_injects_service_variables(
    tmp_path: Path,
):
    # `helm install condaproxy helm/condaproxy`: the Service is "condaproxy", so every pod of the
    # namespace would get CONDAPROXY_SERVICE_HOST, CONDAPROXY_PORT..., which the proxy refuses
    # as unknown settings: the pod would never start.
    docs = render(release="condaproxy")
    validate(docs)
    service = named(docs, "Service", "condaproxy")
    injected = service_link_env(service)
    with pytest.raises(ConfigError, match="CONDAPROXY_"):
        load_config(docs, tmp_path, injected)
    assert (
        named(docs, "Deployment", "condaproxy")["spec"]["template"]["spec"]["enableServiceLinks"]
        is False
    )
    # The sidecar example meets the same variables from such a release in its namespace.
    pod = yaml.safe_load((CHART / "examples" / "ci-runner-pod.yaml").read_text())
    assert pod["spec"]["enableServiceLinks"] is False


def test_probes_allow_a_long_start_and_check_the_right_endpoints():
    container = proxy_pod(render())["containers"][0]
    startup = container["startupProbe"]
    assert startup["httpGet"] == {"path": "/healthz", "port": "http"}
    # The proxy listens only after start-up work (sweeps, copying uploads from the bucket, a
    # first eviction pass): minutes on a full cache, not the liveness probe's 60 s.
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120
    liveness, readiness = container["livenessProbe"], container["readinessProbe"]
    assert liveness["httpGet"]["path"] == "/healthz" and readiness["httpGet"]["path"] == "/readyz"
    # Kubernetes' default timeout is 1 s: one slow answer under load must not restart the pod.
    assert liveness["timeoutSeconds"] >= 3 and readiness["timeoutSeconds"] >= 2
    assert liveness["periodSeconds"] * liveness["failureThreshold"] >= 30

    tuned = render({"probes": {"startup": {"failureThreshold": 240}}})
    assert proxy_pod(tuned)["containers"][0]["startupProbe"]["failureThreshold"] == 240
    with pytest.raises(HelmError, match="/probes/liveness"):
        render({"probes": {"liveness": {"timeoutSeconds": 0}}})


def test_termination_lets_endpoints_forget_the_pod_then_drains_within_the_grace_period(
    tmp_path: Path,
):
    docs = render()
    pod = proxy_pod(docs)
    command = pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    sleep = int(command[1])
    assert sleep >= 3  # Endpoints, kube-proxy and Ingress controllers catch up first
    # After SIGTERM, a download in flight stalls at most upstream.read_timeout before it ends.
    read_timeout = load_config(docs, tmp_path).upstream.read_timeout
    assert pod["terminationGracePeriodSeconds"] >= sleep + read_timeout

    assert "lifecycle" not in proxy_pod(render({"preStopSleepSeconds": 0}))["containers"][0]
    with pytest.raises(HelmError, match="must exceed preStopSleepSeconds"):
        render({"terminationGracePeriodSeconds": 5, "preStopSleepSeconds": 5})


def test_the_cache_volume_is_not_chowned_file_by_file_at_every_start():
    pod = proxy_pod(render())
    assert "persistentVolumeClaim" in {v["name"]: v for v in pod["volumes"]}["cache"]
    assert pod["securityContext"]["fsGroup"] == 10001
    assert pod["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"


def measured_peak_per_worker() -> int:
    """bench/README.md: the peak RSS of the proxy's process tree (1 worker, 400,000 records)."""
    text = (ROOT / "bench" / "README.md").read_text()
    row = next(line for line in text.splitlines() if "peak RSS / anonymous RSS of the tree" in line)
    return int(re.findall(r"\*\*(\d+) / \d+ MiB\*\*", row)[0]) * 2**20


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_memory_limit_covers_the_measured_peak_of_every_worker(workers: int):
    peak = measured_peak_per_worker()
    assert peak >= 900 * 2**20  # README: the policy's filtered snapshot alone peaks at 0.9 GB
    resources = proxy_pod(render({"workers": workers}))["containers"][0]["resources"]
    # Each uvicorn worker builds big documents in a worker process of its own.
    assert quantity(resources["limits"]["memory"]) >= workers * peak * 1.2
    assert quantity(resources["requests"]["memory"]) >= peak  # one build at a time, at least
    assert quantity(resources["requests"]["memory"]) <= quantity(resources["limits"]["memory"])

    given = render({"workers": workers, "resources": {"limits": {"memory": "8Gi"}}})
    assert proxy_pod(given)["containers"][0]["resources"]["limits"] == {"memory": "8Gi"}


def test_replicas_spread_over_nodes_and_the_budget_leaves_room_to_drain():
    docs = render(SHARED)
    validate(docs)
    pod = proxy_pod(docs)
    labels = named(docs, "Deployment", "cache-condaproxy")["spec"]["template"]["metadata"]["labels"]
    (term,) = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"].items() <= labels.items()
    # The operator's own affinity replaces it; one replica has none.
    mine = {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}}
    assert proxy_pod(render({**SHARED, "affinity": mine}))["affinity"] == mine
    assert "affinity" not in proxy_pod(render())
    with pytest.raises(HelmError, match="minAvailable 3 with replicaCount 3 allows no eviction"):
        render({**SHARED, "podDisruptionBudget": {"minAvailable": 3}})


def network_policies(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "NetworkPolicy"}


def test_network_policy_admits_the_replicas_the_listed_peers_and_fences_valkey():
    ingress_nginx = {"namespaceSelector": {"matchLabels": {"name": "ingress-nginx"}}}
    prometheus = {"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}
    values = {
        **SHARED,
        "coordination": {"valkey": {"enabled": True}, "peerToken": "p" * 24},
        "networkPolicy": {
            "enabled": True,
            "sameNamespace": False,
            "from": [ingress_nginx],
            "metricsFrom": [prometheus],
        },
    }
    docs = render(values)
    validate(docs)
    policies = network_policies(docs)
    proxy, valkey = policies["cache-condaproxy"], policies["cache-condaproxy-valkey"]
    selector = named(docs, "Deployment", "cache-condaproxy")["spec"]["selector"]["matchLabels"]
    assert proxy["podSelector"]["matchLabels"] == selector
    (rule,) = proxy["ingress"]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    # Replicas stream each other's downloads from their pod IPs: they must reach each other.
    assert rule["from"] == [{"podSelector": {"matchLabels": selector}}, ingress_nginx, prometheus]
    # Valkey has no password: only the proxy's pods reach it.
    valkey_pod = named(docs, "Deployment", "cache-condaproxy-valkey")["spec"]["template"]
    assert valkey["podSelector"]["matchLabels"].items() <= valkey_pod["metadata"]["labels"].items()
    assert valkey["ingress"] == [
        {
            "ports": [{"port": "redis", "protocol": "TCP"}],
            "from": [{"podSelector": {"matchLabels": selector}}],
        }
    ]

    same_namespace = network_policies(render({"networkPolicy": {"enabled": True}}))
    assert {"podSelector": {}} in same_namespace["cache-condaproxy"]["ingress"][0]["from"]
    assert network_policies(render()) == {}


def test_image_is_pinned_to_the_app_version_or_a_digest():
    digest = "sha256:" + "0123456789abcdef" * 4
    container = proxy_pod(render({"image": {"digest": digest}}))["containers"][0]
    version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    assert container["image"] == f"ghcr.io/condaproxy/condaproxy:{version}@{digest}"


def test_credentials_appear_only_in_the_secret(tmp_path: Path):
    secrets = {
        n: f"{n}-0123456789abcdef"
        for n in ("tok", "upw", "scrape", "s3id", "s3key", "redis", "peer")
    }
    values = {
        **SHARED,
        "tokens": [{"name": "ci", "roles": {"*": "read"}, "value": secrets["tok"]}],
        "channels": {
            "internal": {
                "upstream": "https://conda.example.org/my-org",
                "upstreamUsername": "ci",
                "upstreamPassword": secrets["upw"],
            }
        },
        "metrics": {"token": secrets["scrape"]},
        "storage": {
            **SHARED["storage"],
            "accessKeyId": secrets["s3id"],
            "secretAccessKey": secrets["s3key"],
        },
        "coordination": {
            "redisUrl": f"redis://:{secrets['redis']}@r:6379/0",
            "peerToken": secrets["peer"],
        },
    }
    docs = render(values)
    validate(docs)
    elsewhere = json.dumps([d for d in docs if d["kind"] != "Secret"])
    stored = json.dumps(by_kind(docs)["Secret"])
    for secret in secrets.values():
        assert secret in stored and secret not in elsewhere


@pytest.mark.parametrize(
    "values, where",
    [
        # credentials in an upstream URL would be written to the ConfigMaps and NOTES in clear
        (
            {"channels": {"x": {"upstream": "https://ci:s3cret@host.example/x"}}},
            "/channels/x/upstream",
        ),
        (
            {"channels": {"x": {"upstream": "https://host.example/t/tk-123/x"}}},
            "/channels/x/upstream",
        ),
        (
            {"storage": {"url": "s3://bucket", "endpoint": "https://k:s@minio:9000"}},
            "/storage/endpoint",
        ),
        # combinations condaproxy refuses at start-up: refused at install instead
        (
            {"channels": {"x": {"upstream": "https://h.example/x", "upstreamPassword": "p"}}},
            "upstreamUsername",
        ),
        (
            {
                "channels": {
                    "x": {
                        "upstream": "https://h.example/x",
                        "upstreamBearer": "b",
                        "upstreamUsername": "u",
                    }
                }
            },
            "/channels/x",
        ),
        # negative or malformed sizes
        ({"persistence": {"size": "-50Gi"}}, "/persistence/size"),
        ({"persistence": {"size": "lots"}}, "/persistence/size"),
        ({"storage": {"l1SizeLimit": "20 gigs"}}, "/storage/l1SizeLimit"),
        ({"resources": {"limits": {"memory": "-1Gi"}}}, "/resources/limits/memory"),
        ({"resources": {"limts": {"memory": "1Gi"}}}, "limts"),
        ({"memoryPerWorker": "1.5Gi"}, "/memoryPerWorker"),
        (
            {"coordination": {"valkey": {"resources": {"requests": {"memory": -64}}}}},
            "/coordination/valkey/resources",
        ),
        # wrong types and unknown keys
        ({"podDisruptionBudget": {"minAvailable": -1}}, "/podDisruptionBudget/minAvailable"),
        ({"podDisruptionBudget": {"minAvailable": "half"}}, "/podDisruptionBudget/minAvailable"),
        ({"persistence": {"accessModes": ["ReadWriteEverywhere"]}}, "/persistence/accessModes/0"),
        ({"serviceMonitor": {"interval": "often"}}, "/serviceMonitor/interval"),
        ({"image": {"tag": "latest please"}}, "/image/tag"),
        ({"image": {"digest": "sha256:abc"}}, "/image/digest"),
        ({"imagePullSecrets": [{"secret": "regcred"}]}, "/imagePullSecrets/0"),
        ({"podSecurityContext": {"runAsNonRoot": "yes"}}, "/podSecurityContext/runAsNonRoot"),
        (
            {"securityContext": {"readOnlyRootFilesystem": "true"}},
            "/securityContext/readOnlyRootFilesystem",
        ),
        ({"terminationGracePeriodSeconds": 0}, "/terminationGracePeriodSeconds"),
        ({"networkPolicy": {"enabled": True, "form": []}}, "form"),
        ({"probes": {"startup": {"failureTreshold": 9}}}, "failureTreshold"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_values_schema_refuses_what_would_break_the_pod_or_leak_a_credential(
    values: dict[str, Any], where: str
):
    with pytest.raises(HelmError, match=re.escape(where)) as refused:
        render(values)
    assert "s3cret" not in str(refused.value) and "tk-123" not in str(refused.value)


def test_a_password_with_its_username_and_a_bearer_alone_still_load(tmp_path: Path):
    channels = {
        "basic": {
            "upstream": "https://h.example/a",
            "upstreamUsername": "u",
            "upstreamPassword": "p",
        },
        "bearer": {"upstream": "https://h.example/b", "upstreamBearer": "b"},
    }
    docs = render({"channels": channels})
    env = {e["name"]: e.get("value", "v") for e in proxy_pod(docs)["containers"][0]["env"]}
    settings = load_config(docs, tmp_path, env)
    assert settings.channels["basic"].upstream_username == "u"
    assert settings.channels["bearer"].upstream_bearer is not None


def test_the_drain_ends_before_the_grace_period():
    """The proxy's drain (server.shutdown_timeout, then up to 5 s for downloads no client
    waits for) starts after the preStop sleep and must end before the kubelet's SIGKILL."""
    for grace, sleep in ((70, 5), (30, 10), (300, 0)):
        pod = proxy_pod(
            render({"terminationGracePeriodSeconds": grace, "preStopSleepSeconds": sleep})
        )
        env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        timeout = float(env["CONDAPROXY_SERVER_SHUTDOWN_TIMEOUT"])
        assert pod["terminationGracePeriodSeconds"] == grace
        assert timeout >= 1 and sleep + timeout + 5 < grace, (grace, sleep, timeout)
