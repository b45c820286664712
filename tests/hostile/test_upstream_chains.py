"""Loop detection must refuse only a real cycle of upstreams. A channel whose upstream is
ANOTHER channel of the same proxy (`team` over `http://<proxy>/cf`: uploads or a policy layered
over a proxied channel) is no cycle; once every upstream request carried the proxy's one
instance id, each of those requests came back "with our own id" and was a 502. The header that
goes upstream was also a stable fingerprint (a hash of the host name and the cache path).
Now the header is the chain of (proxy, channel) hops, each an opaque keyed token, and only a
request whose own hop is already on it (or a chain past the bound) is refused. Real processes."""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.support.processes import Proxy, Upstream, free_port, write_config

READ_TIMEOUT = 5
HOPS = "x-condaproxy-hops"
Channels = dict[str, dict[str, object]]
PATHS = [
    "linux-64/repodata.json",
    "noarch/current_repodata.json",
    "linux-64/repodata_shards.msgpack.zst",
    "linux-64/libzlib-1.3-h0.conda",
]


def _start(tmp_path: Path, channels: Callable[[str], Channels], workers: int = 1) -> Proxy:
    tmp_path.mkdir(parents=True, exist_ok=True)
    port = free_port()
    me = f"http://127.0.0.1:{port}"
    config = write_config(tmp_path / "proxy.toml", tmp_path / "cache", channels(me))
    return Proxy(config, port=port, workers=workers).start()


def _hops(seen: list[dict[str, object]], prefix: str = HOPS) -> list[str]:
    """The hop chains (headers named `prefix`...) the real upstream received."""
    found = []
    for request in seen:
        headers = request["headers"]
        assert isinstance(headers, dict)
        found.extend(v for k, v in headers.items() if k.lower().startswith(prefix))
    return found


# Non-cyclic layerings of channels of one proxy: each must be served as if the upstream were
# any other server. (name, channels given the proxy's own URL and the real upstream's, the
# channel the client asks, serve workers, the real upstream's directory below its root)
LAYERINGS: dict[str, tuple[Callable[[str, str], Channels], str, int, str]] = {
    "team-over-cf": (
        lambda me, up: {"team": {"upstream": f"{me}/cf"}, "cf": {"upstream": up}},
        "team",
        1,
        "",
    ),
    "team-over-a-label-of-cf": (
        lambda me, up: {"team": {"upstream": f"{me}/cf/label/main"}, "cf": {"upstream": up}},
        "team",
        1,
        "label/main",
    ),
    "three-layers": (
        lambda me, up: {
            "top": {"upstream": f"{me}/mid"},
            "mid": {"upstream": f"{me}/cf"},
            "cf": {"upstream": up},
        },
        "top",
        1,
        "",
    ),
    "team-over-cf-2-workers": (
        lambda me, up: {"team": {"upstream": f"{me}/cf"}, "cf": {"upstream": up}},
        "team",
        2,
        "",
    ),
}


class TestAChannelOverAnotherChannelOfTheSameProxyIsServed:
    @pytest.mark.parametrize("layering", sorted(LAYERINGS))
    def test_served_like_any_upstream(self, tmp_path, channel_dir, layering):
        channels, asked, workers, below = LAYERINGS[layering]
        root = tmp_path / "up"
        shutil.copytree(channel_dir, root / below if below else root)
        upstream = Upstream(root).start()
        proxy = _start(tmp_path / "p", lambda me: channels(me, upstream.url), workers)
        try:
            for _ in range(2):  # a miss, then whatever the cache makes of it
                for path in PATHS:
                    got = httpx.get(f"{proxy.url}/{asked}/{path}", timeout=30)
                    assert got.status_code == 200, (path, got.status_code, got.text)
                    if path.endswith(".conda"):
                        want = (channel_dir / path).read_bytes()
                        assert got.content == want, path
            names = set(channels("x", "y"))
            chains = _hops(upstream.seen())
            assert chains, "the real upstream saw no hop header"
            for chain in chains:
                # Opaque hops (hex: no channel name or host in them), one per channel passed.
                tokens = chain.split(",")
                assert 1 <= len(tokens) <= len(names), chain
                assert all(re.fullmatch(r"[0-9a-f]{16}", t) for t in tokens), chain
            assert "Traceback" not in proxy.log()
        finally:
            proxy.stop()
            upstream.stop()

    @pytest.mark.e2e
    def test_a_client_installs_through_the_layered_channel(self, tmp_path, channel_dir):
        from tests.support.clients import rattler_install

        upstream = Upstream(channel_dir).start()
        proxy = _start(
            tmp_path / "p",
            lambda me: {"team": {"upstream": f"{me}/cf"}, "cf": {"upstream": upstream.url}},
        )
        try:
            result = rattler_install(f"{proxy.url}/team", tmp_path / "client", False, "datatool")
            assert result["ok"], result.get("trace")
            assert all(r["url"].startswith(f"{proxy.url}/team/") for r in result["records"])
        finally:
            proxy.stop()
            upstream.stop()


def test_the_hops_sent_upstream_are_no_stable_fingerprint(tmp_path, channel_dir):
    """Two runs of one config (same host, same cache path) send unrelated hops: the secret is
    random per `serve`, not derived from the host name or the cache directory."""
    upstream = Upstream(channel_dir).start()
    seen = []
    try:
        for _ in range(2):
            proxy = _start(tmp_path / "p", lambda _: {"ch": {"upstream": upstream.url}})
            try:
                got = httpx.get(f"{proxy.url}/ch/linux-64/repodata.json", timeout=30)
                assert got.status_code == 200
            finally:
                proxy.stop()
            seen.append(set(_hops(upstream.seen(), "x-condaproxy-")))
            upstream.reset()
            shutil.rmtree(tmp_path / "p" / "cache")
        assert seen[0] and seen[1] and not seen[0] & seen[1], seen
    finally:
        upstream.stop()


CYCLES: dict[str, Callable[[str], Channels]] = {
    "itself": lambda me: {"ch": {"upstream": f"{me}/ch"}},
    "a-label-of-itself": lambda me: {"ch": {"upstream": f"{me}/ch/label/main"}},
    "a-b-a": lambda me: {"ch": {"upstream": f"{me}/b"}, "b": {"upstream": f"{me}/ch"}},
    "a-b-c-b": lambda me: {
        "ch": {"upstream": f"{me}/b"},
        "b": {"upstream": f"{me}/c"},
        "c": {"upstream": f"{me}/b"},
    },
}


def _assert_loop_refused(url: str, proxies: list[Proxy]) -> None:
    for path in PATHS[:2] + PATHS[3:]:
        started = time.monotonic()
        got = httpx.get(f"{url}/{path}", timeout=3 * READ_TIMEOUT)
        took = time.monotonic() - started
        assert got.status_code == 502, (path, got.status_code, got.text)
        assert "(a loop" in got.json()["error"], got.text
        assert took < READ_TIMEOUT / 2, (path, took)
    # A shard index that cannot be had is a 404 (clients fall back to repodata.json).
    shards = httpx.get(f"{url}/{PATHS[2]}", timeout=30)
    assert shards.status_code == 404
    for proxy in proxies:
        assert "Traceback" not in proxy.log()


class TestACycleIsA502AtOnce:
    @pytest.mark.parametrize(
        ("cycle", "workers"),
        [*((c, 1) for c in sorted(CYCLES)), ("itself", 2), ("a-b-a", 2)],
    )
    def test_within_one_proxy(self, tmp_path, cycle, workers):
        proxy = _start(tmp_path, CYCLES[cycle], workers)
        try:
            _assert_loop_refused(f"{proxy.url}/ch", [proxy])
        finally:
            proxy.stop()

    def test_across_two_proxies(self, tmp_path):
        """A -> B -> A: two condaproxies (each its own secret) whose channels point at each
        other; the chain B forwards carries A's hop back to A."""
        port_a, port_b = free_port(), free_port()
        a_url, b_url = f"http://127.0.0.1:{port_a}", f"http://127.0.0.1:{port_b}"
        proxies = []
        try:
            for name, port, other in (("a", port_a, b_url), ("b", port_b, a_url)):
                (tmp_path / name).mkdir()
                config = write_config(
                    tmp_path / name / "proxy.toml",
                    tmp_path / name / "cache",
                    {"ch": {"upstream": f"{other}/ch"}},
                )
                proxies.append(Proxy(config, port=port).start())
            _assert_loop_refused(f"{a_url}/ch", proxies)
            _assert_loop_refused(f"{b_url}/ch", proxies)
        finally:
            for proxy in proxies:
                proxy.stop()


# A hops header no proxy sent: refused as a loop when too long (508), its unreadable tokens
# dropped otherwise (served); 400/431: the HTTP server itself refused the bytes.
HOSTILE: dict[str, tuple[str, set[int]]] = {
    "huge": ("a" * 60_000, {400, 431, 508}),
    "many-hops": (",".join(f"{i:016x}" for i in range(40)), {508}),
    "one-too-many": (",".join(f"{i:016x}" for i in range(17)), {508}),
    "many-commas": ("," * 5_000, {508}),
    "control-bytes": ("\x01\x7f,0000000000000000", {400, 200}),
    "garbage": (";;=\"'<script>, ,ZZZZ,%00,../../,0000000000000000x,", {200}),
    "non-ascii": ("é" * 100, {200}),
}


class TestAHostileHopsHeaderIsBounded:
    @pytest.fixture(scope="class")
    def served(self, tmp_path_factory, channel_dir):
        tmp = tmp_path_factory.mktemp("hostile-hops")
        upstream = Upstream(channel_dir).start()
        proxy = _start(tmp, lambda _: {"ch": {"upstream": upstream.url}})
        yield proxy, upstream
        proxy.stop()
        upstream.stop()

    @pytest.mark.parametrize("case", sorted(HOSTILE))
    def test_never_a_500_and_never_forwarded(self, served, case):
        proxy, upstream = served
        upstream.reset()
        value, statuses = HOSTILE[case]
        raw = value.encode("utf-8")
        with httpx.Client(timeout=30) as client:
            got = client.get(f"{proxy.url}/ch/linux-64/repodata.json", headers=[(HOPS, raw)])
        assert got.status_code in statuses, (got.status_code, got.text)
        if got.status_code == 508:
            assert "error" in got.json()
        for chain in _hops(upstream.seen()):  # only this proxy's own hop goes on
            assert re.fullmatch(r"[0-9a-f]{16}", chain), chain
        assert "Traceback" not in proxy.log()

    def test_up_to_the_bound_is_served(self, served):
        proxy, _ = served
        chain = ",".join(f"{i:016x}" for i in range(16))
        got = httpx.get(f"{proxy.url}/ch/linux-64/repodata.json", headers={HOPS: chain})
        assert got.status_code == 200, got.text
