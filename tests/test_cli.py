"""The command line in-process (`main([...])`): token new, check-config, the admin commands
against the in-process app, and what `serve` hands uvicorn (which is replaced by a recorder:
nothing listens). tests/system/test_cli.py runs the same commands as processes."""

from __future__ import annotations

import functools
import json
import os
import re
import runpy
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import respx
from starlette.testclient import TestClient

from condaproxy import __version__, cli
from condaproxy.ops import client as admin_client
from condaproxy.settings import ChannelSettings
from condaproxy.web import logs
from condaproxy.web.app import create_app
from condaproxy.web.connection import BoundedHttpToolsProtocol
from tests.support.bridge import URL, bridge
from tests.support.inproc import Clock, make_settings, token, upstream_subdir

UP = "https://up.example/cf"
ADMIN = "admin-token-0001"


def config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "proxy.toml"
    path.write_text(
        f'[cache]\npath = "{tmp_path / "cache"}"\n'
        '[channels.org]\nupstream = "https://up.example/org"\nupstream_bearer = "s3cret-bearer"\n'
        '[tokens.ci]\ntoken = "has_underscore_token"\nroles = { org = "read" }\n' + extra
    )
    return path


def test_token_new_prints_one_token(capsys):
    assert cli.main(["token", "new", "--length", "16"]) == 0
    assert re.fullmatch(r"[A-Za-z0-9]{16}\n", capsys.readouterr().out)


def test_python_dash_m_condaproxy_runs_the_same_main(monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["condaproxy", "token", "new", "--length", "16"])
    with pytest.raises(SystemExit) as done:
        runpy.run_module("condaproxy", run_name="__main__")
    assert done.value.code == 0
    assert re.fullmatch(r"[A-Za-z0-9]{16}\n", capsys.readouterr().out)


def test_the_version_has_one_source():
    """pyproject reads it from condaproxy/__init__.py: the installed metadata agrees."""
    assert cli.package_version() == __version__ == version("condaproxy")


def test_check_config_prints_effective_settings_and_warnings(tmp_path, capsys):
    assert cli.main(["check-config", "--config", str(config(tmp_path))]) == 0
    out, err = capsys.readouterr()
    assert printed(out)["channels"]["org"]["upstream_bearer"] == "***"
    assert "s3cret-bearer" not in out + err and "has_underscore_token" not in out + err
    assert "warning: tokens.ci.token" in err and "is ok" in err


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('[channels.x]\nprivate = "yes"\nupstream = "https://a.example"\n', "'channels.x.private'"),
        ('[cache]\npath = "{blocker}"\n', "'cache.path'"),
    ],
)
def test_a_config_that_cannot_run_exits_2_with_one_line(tmp_path, capsys, text, says):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a directory")
    path = tmp_path / "bad.toml"
    path.write_text(text.format(blocker=blocker))
    assert cli.main(["check-config", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("condaproxy: config error:") and says in err
    assert len(err.strip().splitlines()) == 1


# the admin commands, against the in-process app


@pytest.fixture
def proxy(tmp_path: Path, monkeypatch) -> Iterator[TestClient]:
    monkeypatch.setattr(
        admin_client, "follow_prefetch", functools.partial(admin_client.follow_prefetch, poll=0.01)
    )
    with respx.mock(assert_all_called=False) as router:
        upstream_subdir(router, UP, "linux-64", {"a-1.0-0.conda": b"a" * 100})
        settings = make_settings(
            tmp_path / "cache", [ChannelSettings("cf", UP)], [token("ops", ADMIN, star="admin")]
        )
        with TestClient(create_app(settings, clock=Clock())) as app:
            bridge(router, app)
            yield app


def printed(out: str) -> Any:
    """The JSON a command printed (structlog's default output shares stdout in tests)."""
    return json.JSONDecoder().raw_decode(out[out.index("{\n") :])[0]


def admin(*args: str) -> int:
    return cli.main([*args, "--url", URL, "--token", ADMIN])


def test_stats_and_purge_print_the_answers(proxy, capsys):
    assert admin("stats") == 0
    assert "cf" in printed(capsys.readouterr().out)["channels"]
    assert admin("purge", "cf/linux-64", "--package", "a", "--metadata-only") == 0
    shown = printed(capsys.readouterr().out)["scope"]
    assert shown == {"channel": "cf", "subdir": "linux-64", "package": "a", "metadata_only": True}


def test_prefetch_waits_for_the_job_and_its_exit_code_says_how_it_ended(proxy, capsys):
    assert admin("prefetch", "cf", "linux-64", "a-1.0-0.conda") == 0
    assert printed(capsys.readouterr().out)["state"] == "done"
    assert admin("prefetch", "cf", "linux-64", "nothere-1.0-0.conda") == 1
    assert printed(capsys.readouterr().out)["state"] == "failed"
    assert admin("prefetch", "cf", "linux-64", "a-1.0-0.conda", "--no-wait") == 0
    assert printed(capsys.readouterr().out)["state"] == "resolving"


def test_a_refused_admin_command_exits_1_with_the_reason(proxy, capsys):
    assert cli.main(["stats", "--url", URL, "--token", "wrong-token-000"]) == 1
    assert (
        capsys.readouterr().err
        == "condaproxy: HTTP 401: unknown token: 'admin' access to channel '*' needs one\n"
    )


# serve: what uvicorn is given


@pytest.fixture
def uvicorn_runs(monkeypatch, tmp_path) -> list[tuple[Any, dict[str, Any]]]:
    import uvicorn

    calls: list[tuple[Any, dict[str, Any]]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: calls.append((app, options)))
    # structlog is configured once per process; tests keep the default (capture_logs works).
    monkeypatch.setattr(logs, "configure_logging", lambda *a, **k: None)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")  # restored after the test
    monkeypatch.setenv("CONDAPROXY_CONFIG", "")
    return calls


def test_serve_runs_one_app_with_the_proxys_own_access_log(tmp_path, uvicorn_runs):
    path = config(tmp_path)
    assert cli.main(["serve", "--config", str(path), "--port", "9999"]) == 0
    [(app, options)] = uvicorn_runs
    assert callable(app)
    assert options == {
        "host": "127.0.0.1", "port": 9999, "access_log": False, "log_level": "warning",
        "log_config": None, "proxy_headers": False, "timeout_graceful_shutdown": 20.0,
        "http": BoundedHttpToolsProtocol,
    }  # fmt: skip
    metrics_dir = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    assert not metrics_dir.exists(), "the metrics directory goes when the server stops"


def test_serve_with_workers_has_each_build_its_app_from_the_same_file(tmp_path, uvicorn_runs):
    path = config(tmp_path, '[server]\nworkers = 2\nhost = "0.0.0.0"\n')
    assert cli.main(["serve", "--config", str(path)]) == 0
    [(app, options)] = uvicorn_runs
    assert app == "condaproxy.cli:app_factory" and options["factory"] is True
    assert options["workers"] == 2 and options["host"] == "0.0.0.0"
    assert os.environ["CONDAPROXY_CONFIG"] == str(path.resolve())
    assert callable(cli.app_factory())  # what each worker runs
    assert cli.app_factory().header_timeout == 30.0  # read by its connections
    assert cli.app_factory().send_timeout == 60.0


def test_metrics_live_next_to_the_cache_without_shared_memory(tmp_path, uvicorn_runs, monkeypatch):
    monkeypatch.setattr(cli, "SHARED_MEMORY", tmp_path / "no-shm")
    directory = cli.prepare_metrics_dir(tmp_path / "cache")
    assert directory.parent == tmp_path / "cache" / "metrics" and directory.is_dir()
    assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(directory)
