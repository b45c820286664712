"""A worker starting beside a live one must not sweep the live one's temp files."""

from __future__ import annotations

from pathlib import Path

from condaproxy.storage.blobs import Liveness, new_temp, sweep_temp_files


def test_only_a_process_alone_on_the_cache_may_sweep(tmp_path: Path):
    first = Liveness(tmp_path / "alive.lock")
    assert first.alone()
    first.share()
    second = Liveness(tmp_path / "alive.lock")
    assert not second.alone(), "another process holds the cache"
    second.share()
    first.close()
    assert not Liveness(tmp_path / "alive.lock").alone()
    second.close()
    assert Liveness(tmp_path / "alive.lock").alone()


def test_a_finished_temp_file_of_a_live_worker_survives_a_sibling_starting(tmp_path: Path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    live = Liveness(tmp_path / "alive.lock")
    assert live.alone()
    live.share()
    temp = new_temp(tmp)
    temp.close()  # written and closed, not yet adopted: no flock protects it any more
    sibling = Liveness(tmp_path / "alive.lock")
    swept = sweep_temp_files(tmp) if sibling.alone() else 0
    assert swept == 0 and temp.path.exists()
    live.close()
    sibling.close()
    assert sweep_temp_files(tmp) == 1  # once nobody is alive, start-up sweeps it
