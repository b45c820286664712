"""The Helm chart, rendered by Helm's own engine (helm-python-sdk embeds the Go SDK, and checks
values against values.schema.json), every object validated against the Kubernetes schemas, and
the rendered config loaded by condaproxy's own loader."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from helm_python import Chart, HelmError, lint

import condaproxy
from condaproxy.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "condaproxy"
KUBE = "1.30.0"
CRDS = {"ServiceMonitor"}  # not in the core schemas: checked by shape only
NOTES = "condaproxy/templates/NOTES.txt"


def render_files(values: dict[str, Any] | None = None, release: str = "cache") -> dict[str, str]:
    chart = Chart.load(str(CHART))
    try:
        return dict(chart.render(values or {}, name=release, namespace="ci"))
    finally:
        chart.close()


def render(values: dict[str, Any] | None = None, release: str = "cache") -> list[dict[str, Any]]:
    docs = []
    for path, text in render_files(values, release).items():
        if path != NOTES:
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


def named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def pod_of(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return dict(by_kind(docs)["Deployment"]["spec"]["template"]["spec"])


def load_config(docs: list[dict[str, Any]], tmp_path: Path, environ: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    config = tmp_path / "proxy.toml"
    configs = [d for d in docs if d["kind"] == "ConfigMap" and "proxy.toml" in d["data"]]
    assert len(configs) == 1
    config.write_text(configs[0]["data"]["proxy.toml"])
    return load_settings(config, environ=environ or {})


def secret_env(pod: dict[str, Any]) -> dict[str, dict[str, str]]:
    env = pod["containers"][0].get("env", [])
    return {e["name"]: e["valueFrom"]["secretKeyRef"] for e in env if "valueFrom" in e}


def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def test_chart_lints_clean():
    report = lint(str(CHART), strict=True)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_default_cluster_cache_renders_valid_objects(tmp_path: Path):
    docs = render()
    validate(docs)
    kinds = {d["kind"] for d in docs}
    assert kinds == {
        "ConfigMap",
        "Deployment",
        "Service",
        "PersistentVolumeClaim",
        "ServiceAccount",
    }
    pod = pod_of(docs)
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["cache"]["persistentVolumeClaim"]["claimName"] == "cache-condaproxy"
    # With a read-only root filesystem, /tmp is a volume of its own.
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    # The rendered proxy.toml is a config condaproxy accepts.
    settings = load_config(docs, tmp_path)
    assert settings.channels["conda-forge"].mirror_only
    assert settings.cache.max_size > 0
    assert settings.server.host == "0.0.0.0"


def test_chart_matches_the_dockerfile(tmp_path: Path):
    docs = render()
    container = pod_of(docs)["containers"][0]
    # pyproject reads the version from the package; the chart must say the same.
    version = condaproxy.__version__
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == version
    assert container["image"].endswith(f":{version}")
    text = dockerfile()
    assert f"EXPOSE {container['ports'][0]['containerPort']}" in text
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert f"CONDAPROXY_CONFIG={mounts['config']}/proxy.toml" in text
    assert f"VOLUME {mounts['cache']}" in text
    assert str(load_config(docs, tmp_path).cache.path) == mounts["cache"]
    assert 'ENTRYPOINT ["condaproxy"]' in text and container["args"][0] == "serve"
    uid = re.search(r"USER (\d+)", text)
    assert uid and int(uid.group(1)) == pod_of(docs)["securityContext"]["runAsUser"]


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


def test_tokens_from_the_chart_secret_or_an_existing_one(tmp_path: Path):
    tokens = [{"name": "ci-bot", "roles": {"team": "write", "*": "read"}, "value": "s3cret-token"}]
    channels = {
        "team": {"upstream": "https://conda.anaconda.org/conda-forge", "allowUpstream": ["numpy"]},
        "secret": {"private": True},
    }
    created = render({"tokens": tokens, "channels": channels})
    validate(created)
    kinds = by_kind(created)
    assert kinds["Secret"]["stringData"] == {"token-ci-bot": "s3cret-token"}
    assert secret_env(pod_of(created))["CONDAPROXY_TOKEN_CI_BOT"] == {
        "name": "cache-condaproxy-credentials",
        "key": "token-ci-bot",
    }
    settings = load_config(created, tmp_path, {"CONDAPROXY_TOKEN_CI_BOT": "s3cret-token"})
    assert settings.tokens["ci-bot"].role_for("team") == "write"
    assert settings.tokens["ci-bot"].token.value == "s3cret-token"
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
    assert "Secret" not in by_kind(existing)
    assert secret_env(pod_of(existing))["CONDAPROXY_TOKEN_CI_BOT"]["name"] == "vault-synced"


def test_missing_token_value_is_a_render_error():
    with pytest.raises(HelmError, match=r"tokens\[ci\]\.value is required"):
        render({"tokens": [{"name": "ci", "roles": {"*": "read"}}]})


CREDENTIAL_FIELDS = {
    "upstreamToken": "upstream_token",
    "upstreamPassword": "upstream_password",
    "upstreamBearer": "upstream_bearer",
}


@pytest.mark.parametrize("channel", ["internal-mirror", "my-org/label/dev"])
@pytest.mark.parametrize("field", sorted(CREDENTIAL_FIELDS))
def test_upstream_credential_given_as_a_value_reaches_the_secret_and_the_proxy(
    tmp_path: Path, field: str, channel: str
):
    secret = "upstream-s3cret-value"
    given = {"upstream": "https://conda.anaconda.org/my-org", field: secret}
    if field == "upstreamPassword":
        given["upstreamUsername"] = "ci"  # a password alone is refused (basic auth needs both)
    values = {"channels": {channel: given}}
    docs = render(values)
    validate(docs)
    stored = by_kind(docs)["Secret"]["stringData"]
    assert list(stored.values()) == [secret]
    refs = secret_env(pod_of(docs))
    assert len(refs) == 1
    (env_name, ref), (key,) = next(iter(refs.items())), stored.keys()
    assert ref == {"name": "cache-condaproxy-credentials", "key": key}
    # The proxy reads the credential from that variable: not dropped, not in the ConfigMap.
    text = json.dumps(docs)
    assert text.count(secret) == 1
    settings = load_config(docs, tmp_path, {env_name: secret})
    assert getattr(settings.channels[channel], CREDENTIAL_FIELDS[field]).value == secret
    assert secret in settings.secrets()


@pytest.mark.parametrize("field", sorted(CREDENTIAL_FIELDS))
def test_upstream_credential_from_a_secret_you_manage(tmp_path: Path, field: str):
    ref = {"name": "anaconda-org", "key": "token"}
    # A bearer token excludes basic auth: the username goes with a token or a password only.
    username = {} if field == "upstreamBearer" else {"upstreamUsername": "ci"}
    values = {
        "channels": {
            "internal": {
                "upstream": "https://conda.anaconda.org/my-org",
                **username,
                field: {"secretKeyRef": ref},
            }
        }
    }
    docs = render(values)
    validate(docs)
    assert "Secret" not in by_kind(docs)
    ((env_name, found),) = secret_env(pod_of(docs)).items()
    assert found == ref
    settings = load_config(docs, tmp_path, {env_name: "from-the-secret"})
    channel = settings.channels["internal"]
    assert getattr(channel, CREDENTIAL_FIELDS[field]).value == "from-the-secret"
    assert channel.upstream_username == username.get("upstreamUsername")


def test_metrics_token_reaches_the_proxy_and_the_servicemonitor(tmp_path: Path):
    docs = render({"metrics": {"token": "scrape-token-123"}, "serviceMonitor": {"enabled": True}})
    validate(docs)
    kinds = by_kind(docs)
    assert kinds["Secret"]["stringData"] == {"metrics-token": "scrape-token-123"}
    endpoint = kinds["ServiceMonitor"]["spec"]["endpoints"][0]
    assert endpoint["authorization"]["credentials"] == {
        "name": "cache-condaproxy-credentials",
        "key": "metrics-token",
    }
    ((env_name, _),) = secret_env(pod_of(docs)).items()
    settings = load_config(docs, tmp_path, {env_name: "scrape-token-123"})
    assert settings.metrics.token and settings.metrics.token.value == "scrape-token-123"


def test_channels_whose_credentials_would_share_a_name_are_a_render_error():
    upstream = "https://conda.anaconda.org/my-org"
    channels = {
        "my-org": {"upstream": upstream, "upstreamToken": "a"},
        "my.org": {"upstream": upstream, "upstreamToken": "b"},
    }
    with pytest.raises(HelmError, match="both need credentials named"):
        render({"channels": channels})


@pytest.mark.parametrize(
    "values, where",
    [
        ({"chanels": {}}, "chanels"),  # a misspelt top-level key
        ({"channels": {"x": {"upstreamtoken": "t"}}}, "upstreamtoken"),  # a misspelt channel key
        ({"channels": {"x": {"upstream": "ftp://host/x"}}}, "/channels/x/upstream"),
        ({"channels": {"x": {"upstreamToken": {"name": "s"}}}}, "/channels/x/upstreamToken"),
        ({"cache": {"maxSize": "45 gigs"}}, "/cache/maxSize"),
        ({"mode": "daemonset"}, "/mode"),
        ({"tokens": [{"name": "ci", "value": "x" * 10}]}, "roles"),
        ({"tokens": [{"name": "ci", "roles": {"*": "owner"}, "value": "x" * 10}]}, "roles"),
        ({"serviceAccount": {"create": "yes"}}, "/serviceAccount/create"),
        ({"extraEnv": [{"value": "no name"}]}, "/extraEnv/0"),
        ({"extraConfig": {"cahce": {"x": 1}}}, "cahce"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_values_schema_refuses_misspelt_and_malformed_values(values: dict[str, Any], where: str):
    with pytest.raises(HelmError, match=re.escape(where)):
        render(values)


def test_name_overrides():
    docs = render({"nameOverride": "conda-cache"})
    validate(docs)
    deployment = by_kind(docs)["Deployment"]
    assert deployment["metadata"]["name"] == "cache-conda-cache"
    assert deployment["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] == "conda-cache"

    docs = render({"fullnameOverride": "condaproxy", "tokens": [], "ingress": {"enabled": True}})
    validate(docs)
    assert {d["metadata"]["name"] for d in docs} == {"condaproxy", "condaproxy-clients"}
    backend = by_kind(docs)["Ingress"]["spec"]["rules"][0]["http"]["paths"][0]["backend"]
    assert backend["service"]["name"] == "condaproxy"


def test_service_account_created_or_named():
    docs = render({"serviceAccount": {"annotations": {"iam.example/role": "cache"}}})
    validate(docs)
    account = by_kind(docs)["ServiceAccount"]
    assert account["metadata"]["annotations"] == {"iam.example/role": "cache"}
    assert account["automountServiceAccountToken"] is False
    pod = pod_of(docs)
    assert pod["serviceAccountName"] == account["metadata"]["name"] == "cache-condaproxy"
    assert pod["automountServiceAccountToken"] is False

    docs = render({"serviceAccount": {"create": False, "name": "shared"}})
    validate(docs)
    assert "ServiceAccount" not in by_kind(docs)
    assert pod_of(docs)["serviceAccountName"] == "shared"


def test_extra_env_volumes_annotations_and_scheduling():
    values = {
        "extraEnv": [
            {"name": "HTTPS_PROXY", "value": "http://egress:3128"},
            {"name": "CA_PATH", "valueFrom": {"configMapKeyRef": {"name": "ca", "key": "path"}}},
        ],
        "extraVolumes": [{"name": "ca", "configMap": {"name": "corporate-ca"}}],
        "extraVolumeMounts": [{"name": "ca", "mountPath": "/etc/ssl/corp", "readOnly": True}],
        "podAnnotations": {"prometheus.io/scrape": "true"},
        "nodeSelector": {"disk": "ssd"},
        "tolerations": [{"key": "cache", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}
                    ]
                }
            }
        },
        "tokens": [{"name": "ci", "roles": {"*": "read"}, "value": "x" * 12}],
    }
    docs = render(values)
    validate(docs)
    deployment = by_kind(docs)["Deployment"]
    pod = pod_of(docs)
    container = pod["containers"][0]
    names = [e["name"] for e in container["env"]]
    assert names == [
        "CONDAPROXY_SERVER_SHUTDOWN_TIMEOUT",
        "CONDAPROXY_TOKEN_CI",
        "HTTPS_PROXY",
        "CA_PATH",
    ]
    assert {"name": "ca", "configMap": {"name": "corporate-ca"}} in pod["volumes"]
    assert values["extraVolumeMounts"][0] in container["volumeMounts"]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and "checksum/config" in annotations
    assert pod["nodeSelector"] == values["nodeSelector"]
    assert pod["tolerations"] == values["tolerations"]
    assert pod["affinity"] == values["affinity"]


def test_extra_config_keys_land_in_their_section(tmp_path: Path):
    extra = {"cache": {"max_repodata_size": "1GiB"}, "uploads": {"read_timeout": 90}}
    docs = render({"extraConfig": extra})
    settings = load_config(docs, tmp_path)
    assert settings.cache.max_repodata_size == 1024**3
    assert settings.uploads.read_timeout == 90
    with pytest.raises(HelmError, match=r"extraConfig\.cache\.max_size is set by the chart"):
        render({"extraConfig": {"cache": {"max_size": "1GiB"}}})


def test_notes_say_how_to_reach_it_with_a_conda_snippet():
    notes = render_files()[NOTES]
    url = "http://cache-condaproxy.ci.svc:8080"
    assert f"condaproxy serves {url}/<channel>" in notes
    assert "kubectl -n ci port-forward svc/cache-condaproxy 8080:8080" in notes
    assert f"channel_alias: {url}" in notes
    assert f"conda install -c {url}/conda-forge <package>" in notes
    assert f'"https://conda.anaconda.org/conda-forge" = ["{url}/conda-forge"]' in notes

    tls = [{"secretName": "tls", "hosts": ["condaproxy.example.org"]}]
    notes = render_files({"ingress": {"enabled": True, "tls": tls}})[NOTES]
    assert "condaproxy serves https://condaproxy.example.org/<channel>" in notes
    assert "channel_alias: https://condaproxy.example.org" in notes

    tokens = [{"name": "ci", "roles": {"*": "read"}, "value": "x" * 12}]
    notes = render_files({"mode": "sidecar", "tokens": tokens}, release="ci-cache")[NOTES]
    assert "channel_alias: http://localhost:8080" in notes
    assert "name: CONDAPROXY_TOKEN_CI" in notes
    assert "{name: ci-cache-condaproxy-credentials, key: token-ci}" in notes


def client_config(docs: list[dict[str, Any]], release: str) -> tuple[dict[str, Any], dict]:
    data = named(docs, "ConfigMap", f"{release}-condaproxy-clients")["data"]
    return yaml.safe_load(data["condarc"]), tomllib.loads(data["pixi-config.toml"])


def test_client_config_sends_conda_and_pixi_through_the_proxy():
    channels = {
        "conda-forge": {"upstream": "https://conda.anaconda.org/conda-forge"},
        "main": {"upstream": "https://repo.anaconda.com/pkgs/main/"},
        "team": {"upstream": "https://conda.anaconda.org/conda-forge"},  # an overlay, no mirror
        "local": {},
        "bioconda": None,  # Helm merges maps with the defaults: null removes one
    }
    docs = render({"channels": channels})
    validate(docs)
    url = "http://cache-condaproxy.ci.svc:8080"
    condarc, pixi = client_config(docs, "cache")
    assert condarc == {"channel_alias": url, "default_channels": [f"{url}/main"]}
    assert pixi == {
        "mirrors": {
            "https://conda.anaconda.org/conda-forge": [f"{url}/conda-forge"],
            "https://repo.anaconda.com/pkgs/main": [f"{url}/main"],
        }
    }
    docs = render({"clientConfig": {"url": "https://conda.example.org/"}})
    condarc, pixi = client_config(docs, "cache")
    assert condarc["channel_alias"] == "https://conda.example.org"
    assert all(m[0].startswith("https://conda.example.org/") for m in pixi["mirrors"].values())
    disabled = render({"clientConfig": {"enabled": False}})
    assert not [d for d in disabled if d["metadata"]["name"].endswith("-clients")]


def test_sidecar_variant_and_example_pod(tmp_path: Path):
    values = yaml.safe_load((CHART / "examples" / "sidecar-values.yaml").read_text())
    docs = render(values, release="ci-cache")  # the release name the example documents
    validate(docs)
    assert sorted(d["metadata"]["name"] for d in docs) == [
        "ci-cache-condaproxy",
        "ci-cache-condaproxy-clients",
    ]
    settings = load_config(docs, tmp_path)
    assert settings.server.workers == 1
    assert settings.server.host == "127.0.0.1"  # only the pod's own containers reach it

    pod = yaml.safe_load((CHART / "examples" / "ci-runner-pod.yaml").read_text())
    validate([pod])
    sidecar = pod["spec"]["initContainers"][0]
    assert sidecar["restartPolicy"] == "Always", "a native sidecar lets the Job complete"
    # Probes run on the loopback the proxy listens on (a kubelet httpGet would use the pod IP).
    for probe, path in [("startupProbe", "/readyz"), ("livenessProbe", "/healthz")]:
        command = " ".join(sidecar[probe]["exec"]["command"])
        assert f"http://127.0.0.1:{settings.server.port}{path}" in command
    assert "/readyz" in " ".join(sidecar["readinessProbe"]["exec"]["command"])
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["condaproxy-config"]["configMap"]["name"] == "ci-cache-condaproxy"
    assert "emptyDir" in volumes["condaproxy-cache"]
    # The runner is configured with the real settings of each client, from the chart.
    condarc, pixi = client_config(docs, "ci-cache")
    assert condarc["channel_alias"] == "http://localhost:8080"
    assert pixi["mirrors"]["https://conda.anaconda.org/conda-forge"] == [
        "http://localhost:8080/conda-forge"
    ]
    clients = volumes["condaproxy-clients"]["configMap"]["name"]
    assert clients == "ci-cache-condaproxy-clients"
    runner_mounts = {
        m["mountPath"]: m["subPath"]
        for m in pod["spec"]["containers"][0]["volumeMounts"]
        if m["name"] == "condaproxy-clients"
    }
    assert runner_mounts == {
        "/etc/conda/.condarc": "condarc",
        "/etc/pixi/config.toml": "pixi-config.toml",
    }
    assert "CONDA_CHANNEL_ALIAS" not in json.dumps(pod), "pixi ignores it: use the mounted files"
