"""The Helm chart, rendered by Helm's own engine (helm-python-sdk embeds the Go SDK), every
object validated against the Kubernetes schemas, and the rendered config loaded by condaproxy."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from helm_python import Chart, HelmError, lint

from condaproxy.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "condaproxy"
KUBE = "1.30.0"
CRDS = {"ServiceMonitor"}  # not in the core schemas: checked by shape only


def render(values: dict[str, Any] | None = None, release: str = "cache") -> list[dict[str, Any]]:
    chart = Chart.load(str(CHART))
    try:
        rendered = chart.render(values or {}, name=release, namespace="ci")
    finally:
        chart.close()
    docs = []
    for path, text in rendered.items():
        if path.endswith("NOTES.txt"):
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def validate(docs: list[dict[str, Any]]) -> None:
    for doc in docs:
        if doc["kind"] in CRDS:
            assert doc["apiVersion"] and doc["metadata"]["name"] and doc["spec"]
            continue
        kubernetes_validate.validate(doc, KUBE, strict=True)


def by_kind(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in docs}


def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def test_chart_lints_clean():
    report = lint(str(CHART), strict=True)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_default_cluster_cache_renders_valid_objects(tmp_path: Path):
    docs = render()
    validate(docs)
    kinds = by_kind(docs)
    assert set(kinds) == {"ConfigMap", "Deployment", "Service", "PersistentVolumeClaim"}
    deployment = kinds["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert pod["volumes"][1]["persistentVolumeClaim"]["claimName"] == "cache-condaproxy"
    # The rendered proxy.toml is a config condaproxy accepts.
    config = tmp_path / "proxy.toml"
    config.write_text(kinds["ConfigMap"]["data"]["proxy.toml"])
    settings = load_settings(config, environ={})
    assert settings.channels["conda-forge"].mirror_only
    assert settings.cache.max_size > 0


def test_chart_matches_the_dockerfile():
    docs = render()
    container = by_kind(docs)["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == version
    assert container["image"].endswith(f":{version}")
    text = dockerfile()
    assert f"EXPOSE {container['ports'][0]['containerPort']}" in text
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert f"CONDAPROXY_CONFIG={mounts['config']}/proxy.toml" in text
    assert f"CONDAPROXY_CACHE_PATH={mounts['cache']}" in text
    assert 'ENTRYPOINT ["condaproxy"]' in text and container["args"][0] == "serve"
    uid = re.search(r"USER (\d+)", text)
    assert (
        uid
        and int(uid.group(1))
        == by_kind(docs)["Deployment"]["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
    )


def test_ingress_servicemonitor_and_pdb_variant():
    docs = render(
        {
            "ingress": {
                "enabled": True,
                "className": "nginx",
                "tls": [{"secretName": "tls", "hosts": ["condaproxy.example.org"]}],
            },
            "serviceMonitor": {"enabled": True},
            "podDisruptionBudget": {"enabled": True},
        }
    )
    validate(docs)
    kinds = by_kind(docs)
    assert {"Ingress", "ServiceMonitor", "PodDisruptionBudget"} <= set(kinds)
    rule = kinds["Ingress"]["spec"]["rules"][0]
    assert rule["http"]["paths"][0]["backend"]["service"]["name"] == "cache-condaproxy"
    assert kinds["ServiceMonitor"]["spec"]["endpoints"][0]["path"] == "/metrics"


def test_tokens_from_a_created_or_existing_secret(tmp_path: Path):
    tokens = [{"name": "ci-bot", "roles": {"team": "write", "*": "read"}, "value": "s3cret-token"}]
    channels = {
        "team": {"upstream": "https://conda.anaconda.org/conda-forge", "allowUpstream": ["numpy"]},
        "secret": {"private": True},
    }
    created = render({"tokens": tokens, "channels": channels})
    validate(created)
    kinds = by_kind(created)
    assert kinds["Secret"]["stringData"] == {"token-ci-bot": "s3cret-token"}
    env = kinds["Deployment"]["spec"]["template"]["spec"]["containers"][0]["env"]
    token_env = next(e for e in env if e["name"] == "CONDAPROXY_TOKEN_CI_BOT")
    assert token_env["valueFrom"]["secretKeyRef"] == {
        "name": "cache-condaproxy-tokens",
        "key": "token-ci-bot",
    }
    config = tmp_path / "proxy.toml"
    config.write_text(kinds["ConfigMap"]["data"]["proxy.toml"])
    settings = load_settings(config, environ={"CONDAPROXY_TOKEN_CI_BOT": "s3cret-token"})
    assert settings.tokens["ci-bot"].role_for("team") == "write"
    assert settings.channels["team"].allow_upstream == ("numpy",)
    assert settings.channels["secret"].private and settings.channels["secret"].upstream is None

    existing = render(
        {
            "tokens": [{"name": "ci-bot", "roles": {"team": "write"}}],
            "channels": channels,
            "existingSecret": "vault-synced",
        }
    )
    validate(existing)
    kinds = by_kind(existing)
    assert "Secret" not in kinds
    env = kinds["Deployment"]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env[0]["valueFrom"]["secretKeyRef"]["name"] == "vault-synced"


def test_sidecar_variant_and_example_pod(tmp_path: Path):
    values = yaml.safe_load((CHART / "examples" / "sidecar-values.yaml").read_text())
    docs = render(values, release="ci-cache")  # the release name the example documents
    validate(docs)
    assert [d["kind"] for d in docs] == ["ConfigMap"]
    config = tmp_path / "proxy.toml"
    config.write_text(docs[0]["data"]["proxy.toml"])
    assert load_settings(config, environ={}).server.workers == 1

    pod = yaml.safe_load((CHART / "examples" / "ci-runner-pod.yaml").read_text())
    validate([pod])
    sidecar = pod["spec"]["initContainers"][0]
    assert sidecar["restartPolicy"] == "Always", "a native sidecar lets the Job complete"
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["condaproxy-config"]["configMap"]["name"] == docs[0]["metadata"]["name"]
    assert "emptyDir" in volumes["condaproxy-cache"]
    runner_env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}
    assert runner_env["CONDA_CHANNEL_ALIAS"] == "http://localhost:8080"


def test_missing_token_value_is_a_render_error():
    with pytest.raises(HelmError, match=r"tokens\[ci\]\.value is required"):
        render({"tokens": [{"name": "ci", "roles": {"*": "read"}}]})
