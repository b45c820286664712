"""The status page's overview: an upload shows at once, but it never makes the page scan the
whole index again (that scan is on a 30 s clock, however often CI uploads)."""

from __future__ import annotations

from condaproxy.ops.overview import MAX_AGE, Overview, OverviewCache


class Fake:
    def __init__(self) -> None:
        self.now = 1000.0
        self.version = 0
        self.scans = 0
        self.upload_reads = 0
        self.uploaded: list[dict[str, object]] = []

    def take(self, now: float) -> Overview:
        self.scans += 1
        usage = {"cf": {"files": self.scans, "bytes": 10}}
        return Overview(taken_at=now, channels={}, usage=usage, uploads={"cf": list(self.uploaded)})

    def take_uploads(self) -> dict[str, list[dict[str, object]]]:
        self.upload_reads += 1
        return {"cf": list(self.uploaded)}

    def cache(self) -> OverviewCache:
        return OverviewCache(self.take, lambda: self.now, lambda: self.version, self.take_uploads)


async def test_uploads_show_at_once_without_a_new_index_scan() -> None:
    fake = Fake()
    cache = fake.cache()
    first = await cache.get()
    assert fake.scans == 1 and first.uploads == {"cf": []}
    for i in range(20):  # a busy CI channel: an upload between every two page views
        fake.uploaded.append({"name": f"tool{i}"})
        fake.version += 1
        fake.now += 0.5
        seen = await cache.get()
        assert seen.uploads["cf"][-1] == {"name": f"tool{i}"}  # at once
        assert seen.usage == first.usage  # the index figures of the first scan
    assert fake.scans == 1
    assert fake.upload_reads == 20


async def test_unchanged_uploads_read_nothing_and_figures_age_out() -> None:
    fake = Fake()
    cache = fake.cache()
    await cache.get()
    fake.now += MAX_AGE / 2
    await cache.get()
    assert (fake.scans, fake.upload_reads) == (1, 0)
    fake.now += MAX_AGE
    later = await cache.get()
    assert fake.scans == 2 and later.usage["cf"]["files"] == 2
