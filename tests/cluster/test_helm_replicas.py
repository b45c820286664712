"""The chart's multi-replica mode: several replicas only with a shared bucket, each pod with an
emptyDir L1, rolling updates, credentials by Secret, and a proxy.toml condaproxy accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from helm_python import HelmError

from tests.deploy.test_helm import by_kind, load_config, named, pod_of, render, validate

SHARED: dict[str, Any] = {
    "replicaCount": 3,
    "storage": {
        "url": "s3://team-cache/condaproxy",
        "endpoint": "https://minio.storage:9000",
        "accessKeyId": {"secretKeyRef": {"name": "s3", "key": "id"}},
        "secretAccessKey": {"secretKeyRef": {"name": "s3", "key": "secret"}},
        "maxSize": "500GiB",
    },
    "coordination": {"redisUrl": "redis://valkey.infra:6379/0", "pollInterval": 5},
}


def test_several_replicas_share_the_bucket_with_an_emptydir_l1(tmp_path: Path) -> None:
    docs = render(SHARED)
    validate(docs)
    kinds = by_kind(docs)
    assert "PersistentVolumeClaim" not in kinds
    assert kinds["PodDisruptionBudget"]["spec"]["minAvailable"] == 1  # on by itself
    deployment = kinds["Deployment"]
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    pod = pod_of(docs)
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["cache"] == {"name": "cache", "emptyDir": {"sizeLimit": "20Gi"}}
    env = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in pod["containers"][0]["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert env["CONDAPROXY_S3_ACCESS_KEY_ID"] == {"name": "s3", "key": "id"}
    assert env["CONDAPROXY_S3_SECRET_ACCESS_KEY"] == {"name": "s3", "key": "secret"}
    assert env["CONDAPROXY_REDIS_URL"]["key"] == "redis-url"  # a value: the chart's Secret
    names = {e["name"] for e in pod["containers"][0]["env"]}
    assert "POD_NAME" in names
    settings = load_config(
        docs,
        tmp_path,
        {
            "CONDAPROXY_S3_ACCESS_KEY_ID": "id",
            "CONDAPROXY_S3_SECRET_ACCESS_KEY": "secret",
            "CONDAPROXY_REDIS_URL": "redis://valkey.infra:6379/0",
            "POD_NAME": "cache-condaproxy-abc",
        },
    )
    assert settings.storage is not None and settings.cluster is not None
    assert (settings.storage.bucket, settings.storage.prefix) == ("team-cache", "condaproxy/")
    assert settings.cluster.replica_id == "cache-condaproxy-abc"
    assert settings.cluster.poll_interval == 5
    assert settings.storage.max_size == 500 * 1024**3


def test_a_single_replica_without_storage_is_unchanged() -> None:
    pod = pod_of(render())
    assert "persistentVolumeClaim" in {v["name"]: v for v in pod["volumes"]}["cache"]
    assert by_kind(render())["Deployment"]["spec"]["strategy"]["type"] == "Recreate"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicaCount": 2}, "replicaCount 2 needs storage.url"),
        ({"coordination": {"redisUrl": "redis://r:6379"}}, "coordination needs storage.url"),
        ({"coordination": {"valkey": {"enabled": True}}}, "coordination needs storage.url"),
        ({"storage": {"url": "gs://bucket"}}, "storage.url"),
        ({"storage": {"url": "s3://bucket", "region": ""}}, "storage.region"),
        ({"storage": {"url": "s3://bucket", "bucket": "x"}}, "bucket"),
    ],
)
def test_replicas_without_a_bucket_or_a_malformed_storage_value_fail_to_render(
    values: dict[str, Any], message: str
) -> None:
    with pytest.raises(HelmError, match=message):
        render(values)


def test_the_readme_scale_out_values_render_valid_objects() -> None:
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = text.split("## Running several replicas", 1)[1].split("\n## ", 1)[0]
    block = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    docs = render(yaml.safe_load(block))
    validate(docs)
    assert by_kind(docs)["Deployment"]["spec"]["replicas"] == 3
    assert "PodDisruptionBudget" in by_kind(docs)


def test_the_charts_own_valkey_renders_and_the_replicas_use_it(tmp_path: Path) -> None:
    values = {
        **SHARED,
        "coordination": {"valkey": {"enabled": True}},
        "podDisruptionBudget": {"enabled": True},
    }
    docs = render(values)
    validate(docs)
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    valkey = deployments["cache-condaproxy-valkey"]
    container = valkey["spec"]["template"]["spec"]["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert "--appendonly" in container["args"] and "--save" in container["args"]
    # The proxy's Service and PDB must never select the Valkey pod.
    pod_labels = set(valkey["spec"]["template"]["metadata"]["labels"].items())
    for kind in ("Service", "PodDisruptionBudget"):
        proxy_side = named(docs, kind, "cache-condaproxy")["spec"]["selector"]
        assert not set(proxy_side.get("matchLabels", proxy_side).items()) <= pod_labels
    settings = load_config(
        docs,
        tmp_path,
        {
            "CONDAPROXY_S3_ACCESS_KEY_ID": "i",
            "CONDAPROXY_S3_SECRET_ACCESS_KEY": "s",
            "POD_NAME": "p",
        },
    )
    assert settings.cluster is not None and settings.cluster.redis_url is not None
    assert settings.cluster.redis_url.value == "redis://cache-condaproxy-valkey:6379/0"
    with pytest.raises(HelmError, match="not both"):
        render({**values, "coordination": {"valkey": {"enabled": True}, "redisUrl": "redis://x"}})


def test_with_a_peer_token_each_replica_is_reachable_at_its_pod_ip(tmp_path: Path) -> None:
    values = {**SHARED, "coordination": {**SHARED["coordination"], "peerToken": "p" * 24}}
    docs = render(values)
    validate(docs)
    env = {e["name"]: e for e in pod_of(docs)["containers"][0]["env"]}
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert env["CONDAPROXY_PEER_URL"]["value"] == "http://$(POD_IP):8080"
    names = list(env)
    assert names.index("POD_IP") < names.index("CONDAPROXY_PEER_URL")  # $(POD_IP) expands
    assert env["CONDAPROXY_PEER_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == "peer-token"
    settings = load_config(
        docs,
        tmp_path,
        {
            "CONDAPROXY_S3_ACCESS_KEY_ID": "i",
            "CONDAPROXY_S3_SECRET_ACCESS_KEY": "s",
            "CONDAPROXY_REDIS_URL": "redis://r:6379/0",
            "CONDAPROXY_PEER_URL": "http://10.1.2.3:8080",
            "CONDAPROXY_PEER_TOKEN": "p" * 24,
            "POD_NAME": "p",
        },
    )
    assert settings.cluster is not None and settings.cluster.peer_url == "http://10.1.2.3:8080"
    assert "cluster-peer" in settings.tokens
