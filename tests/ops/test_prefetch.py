"""Prefetch jobs on their own: what a request may say, how a job moves from resolving to done
or failed (whatever breaks), how many are kept, and that shutdown stops them. File names only:
the resolver (py-rattler) is exercised once, in tests/web/test_cache_api.py."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from condaproxy.ops.prefetch import KEEP_JOBS, Prefetcher, as_spec, parse_request
from condaproxy.rules.errors import BadRequest, NotFound
from condaproxy.storage.index import Index
from tests.support.inproc import Clock, until


@pytest.mark.parametrize(
    ("body", "parsed"),
    [
        (["a-1-0.conda", " numpy >=1 "], (["a-1-0.conda", "numpy >=1"], False)),
        ({"packages": ["numpy"], "with_dependencies": True}, (["numpy"], True)),
        ({"packages": ["numpy"]}, (["numpy"], False)),
    ],
)
def test_a_request_is_a_list_or_an_object(body, parsed):
    assert parse_request(body) == parsed


@pytest.mark.parametrize(
    "body",
    [
        None,
        3,
        "numpy",
        [],
        [""],
        ["  "],
        {"packages": "numpy"},
        {"packages": ["x"], "with_dependencies": 1},
    ],
)
def test_anything_else_is_a_400(body):
    with pytest.raises(BadRequest):
        parse_request(body)


@pytest.mark.parametrize(
    ("item", "spec"),
    [
        ("numpy-2.1.0-py312h0_0.conda", "numpy ==2.1.0 py312h0_0"),
        ("lib-core-1-0.tar.bz2", "lib-core ==1 0"),
        ("numpy >=2", "numpy >=2"),
    ],
)
def test_a_file_name_becomes_the_exact_spec_that_selects_it(item, spec):
    assert as_spec(item) == spec


class Warm:
    """What the proxy's warm does, scripted per file: "hit", "miss", or an exception."""

    def __init__(self, script: dict[str, object]) -> None:
        self.script = script
        self.calls: list[tuple[str, str, str]] = []
        self.release = asyncio.Event()

    async def __call__(self, channel: str, subdir: str, filename: str) -> str:
        self.calls.append((channel, subdir, filename))
        outcome = self.script[filename]
        if outcome == "block":
            await self.release.wait()
            return "miss"
        if isinstance(outcome, BaseException):
            raise outcome
        return str(outcome)


async def no_repodata(channel: str, subdir: str) -> None:
    return None


def prefetcher(tmp_path: Path, warm: Warm, clock: Clock | None = None) -> Prefetcher:
    return Prefetcher(
        Index(tmp_path / "index"),
        no_repodata,
        warm,
        lambda c: f"http://x.invalid/{c}",
        clock or Clock(),
    )


def job_of(p: Prefetcher, job_id: str) -> dict:
    return next(j for j in p.jobs() if j["id"] == job_id)


async def finished(p: Prefetcher, job_id: str) -> dict:
    await until(lambda: job_of(p, job_id)["state"] in ("done", "failed"))
    return job_of(p, job_id)


async def test_a_job_fetches_each_file_and_counts_what_was_cached(tmp_path):
    warm = Warm({"a-1-0.conda": "miss", "b-1-0.conda": "hit"})
    clock = Clock()
    p = prefetcher(tmp_path, warm, clock)
    job = p.submit("ch", "noarch", ["a-1-0.conda", "b-1-0.conda"], False)
    assert job.state == "resolving" and job_of(p, job.id)["state"] == "resolving"
    clock.now += 5
    done = await finished(p, job.id)
    assert (done["state"], done["total"], done["fetched"], done["already_cached"]) == (
        "done", 2, 2, 1)  # fmt: skip
    assert done["finished_at"] == done["created_at"] + 5
    assert sorted(warm.calls) == [("ch", "noarch", "a-1-0.conda"), ("ch", "noarch", "b-1-0.conda")]
    await p.aclose()


async def test_a_file_the_proxy_refuses_is_a_failure_of_the_job_not_of_the_others(tmp_path):
    warm = Warm({"a-1-0.conda": NotFound("not upstream"), "b-1-0.conda": "miss"})
    p = prefetcher(tmp_path, warm)
    done = await finished(p, p.submit("ch", "linux-64", ["a-1-0.conda", "b-1-0.conda"], False).id)
    assert done["state"] == "failed" and done["fetched"] == 1
    assert done["failures"] == [{"file": "linux-64/a-1-0.conda", "error": "not upstream"}]


async def test_an_unexpected_error_fails_the_job_and_says_what_broke(tmp_path):
    warm = Warm({"a-1-0.conda": RuntimeError("disk on fire")})
    p = prefetcher(tmp_path, warm)
    done = await finished(p, p.submit("ch", "linux-64", ["a-1-0.conda"], False).id)
    assert done["state"] == "failed" and done["error"] == "RuntimeError: disk on fire"


def test_a_subdir_that_is_not_one_is_refused(tmp_path):
    with pytest.raises(BadRequest, match="not a conda subdir"):
        prefetcher(tmp_path, Warm({})).submit("ch", "linux_64", ["a-1-0.conda"], False)


async def test_only_the_newest_jobs_are_kept(tmp_path):
    warm = Warm({"a-1-0.conda": "hit"})
    p = prefetcher(tmp_path, warm)
    ids = [p.submit("ch", "noarch", ["a-1-0.conda"], False).id for _ in range(KEEP_JOBS + 5)]
    await until(lambda: all(j["state"] == "done" for j in p.jobs()))
    assert len(p.jobs()) == KEEP_JOBS
    assert {j["id"] for j in p.jobs()} == set(ids[5:])


async def test_shutdown_stops_running_jobs(tmp_path):
    warm = Warm({"a-1-0.conda": "block"})
    p = prefetcher(tmp_path, warm)
    job = p.submit("ch", "noarch", ["a-1-0.conda"], False)
    await until(lambda: bool(warm.calls))
    await asyncio.wait_for(p.aclose(), 5)
    # Stopped, it ends as failed and says why (it was left "fetching" for ever before).
    stopped = job_of(p, job.id)
    assert stopped["state"] == "failed" and "interrupted" in stopped["error"]
    assert stopped["finished_at"] is not None
