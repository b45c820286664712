"""The status and browsing pages in a real browser: headless Chromium (Debian's `chromium` and
`chromium-driver`, installed by the fixture below when missing: a machine without them fails
with the install error, it never skips) driven by selenium, against a real proxy process in
front of a real upstream. What a user sees is checked, a package link is followed and the
downloaded bytes compared with the upstream's file, and each page is saved as a screenshot
under the test's tmp dir (printed, never committed)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.channel import Pkg, build_package

pytestmark = [pytest.mark.browser, pytest.mark.integration]

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PACKAGES = ("chromium", "chromium-driver")
# A closed network: without these, Chromium keeps reaching out (updates, sync, QUIC probes).
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,1100",
)
READ, WRITE, ADMIN = "browser-read-token-1", "browser-write-token-2", "browser-admin-token-3"
TOKENS = {
    "reader": {"token": READ, "roles": {"team": "read"}},
    "ci": {"token": WRITE, "roles": {"team": "write"}},
    "ops": {"token": ADMIN, "roles": {"*": "admin"}},
}
WAIT = 20.0


def _apt(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(
        ["apt-get", *args], capture_output=True, text=True, env=env, timeout=1200, check=False
    )


def ensure_chromium(apt: Callable[..., Any] = _apt) -> tuple[Path, Path]:
    """Chromium and its driver from Debian's packages, installed if missing. Any failure to
    install fails the test with apt's own words: a machine without a browser never skips."""
    if CHROMIUM.exists() and CHROMEDRIVER.exists():
        return CHROMIUM, CHROMEDRIVER
    try:
        done = apt("install", "-y", *PACKAGES)
        if done.returncode != 0:  # a fresh machine may have no package lists yet
            apt("update")
            done = apt("install", "-y", *PACKAGES)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"cannot install {' '.join(PACKAGES)}: {exc}")
    if done.returncode != 0 or not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail(
            f"cannot install {' '.join(PACKAGES)} (apt-get exit {done.returncode}):\n"
            f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        )
    return CHROMIUM, CHROMEDRIVER


@pytest.fixture(scope="session")
def chromium() -> tuple[Path, Path]:
    return ensure_chromium()


@pytest.fixture
def browser(chromium: tuple[Path, Path], tmp_path: Path) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = chromium
    options = webdriver.ChromeOptions()
    options.binary_location = str(binary)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    service = Service(executable_path=str(driver_path), log_output=str(tmp_path / "driver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(WAIT)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    driver.execute_cdp_cmd(
        "Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    driver.downloads = downloads
    try:
        yield driver
    finally:
        driver.quit()


def shot(driver: Any, tmp_path: Path, name: str) -> Path:
    """A screenshot of the whole page, kept as a test artifact."""
    folder = tmp_path / "screenshots"
    folder.mkdir(exist_ok=True)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, max(int(height) + 120, 800))
    path = folder / f"{name}.png"
    assert driver.save_screenshot(str(path)), path
    print(f"screenshot: {path}")
    return path


def text_of(driver: Any) -> str:
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.TAG_NAME, "body").text)


def navigated(driver: Any, act: Any) -> None:
    """Do `act()` (a click, a form submit) and wait, bounded, until the browser has left the
    current page: selenium does not always wait for the navigation a submit starts."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    old = driver.find_element(By.TAG_NAME, "html")
    act()
    WebDriverWait(driver, WAIT).until(expected_conditions.staleness_of(old))


def click(driver: Any, link_text: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.LINK_TEXT, link_text).click()


def downloaded(folder: Path, name: str) -> bytes:
    deadline = time.monotonic() + WAIT
    target = folder / name
    while time.monotonic() < deadline:
        if target.exists() and not list(folder.glob("*.crdownload")):
            return target.read_bytes()
        time.sleep(0.05)
    raise AssertionError(f"{name} was not downloaded; found {sorted(os.listdir(folder))}")


def cached_files(proxy_url: str, channel: str) -> int:
    stats = httpx.get(f"{proxy_url}/api/cache/stats", headers={"x-api-key": ADMIN}).json()
    return int(stats["channels"][channel]["files"])


def test_a_user_finds_the_proxy_its_channels_and_a_package(
    browser, upstream, start_proxy, channel_dir: Path, tmp_path: Path
):
    from selenium.webdriver.common.by import By

    proxy = start_proxy(
        {"cf": {"upstream": upstream.url}, "team": {"private": True}}, tokens=TOKENS
    )
    tool = build_package(Pkg("teamtool", "2.0", "h0", "noarch"), tmp_path / "w", tmp_path / "o")
    sha = hashlib.sha256(tool.read_bytes()).hexdigest()
    uploaded = httpx.post(
        f"{proxy.url}/api/channels/team/upload/{tool.name}",
        params={"sha256": sha},
        content=tool.read_bytes(),
        headers={"x-api-key": WRITE},
    )
    assert uploaded.status_code == 201, uploaded.text
    # One package through the proxy before anyone looks, so the page has something to count.
    assert httpx.get(f"{proxy.url}/cf/noarch/pyutil-0.4-pyh0.conda").status_code == 200
    deadline = time.monotonic() + WAIT
    while cached_files(proxy.url, "cf") < 2 and time.monotonic() < deadline:
        time.sleep(0.05)  # the package and the shard its checksum was read from
    held = cached_files(proxy.url, "cf")

    # The front page, anonymous: the public channel with its counts, not the private one.
    browser.get(proxy.url + "/")
    page = text_of(browser)
    assert browser.title == "Status - condaproxy"
    assert "version 0.1.0" in page and "Channels" in page
    rows = browser.find_elements(By.CSS_SELECTOR, "table.channels tbody tr")
    assert [r.find_element(By.TAG_NAME, "a").text for r in rows] == ["cf"]
    assert f"{held} files," in rows[0].text and upstream.url in rows[0].text
    assert "team" not in page and "teamtool" not in page
    assert f"channel_alias: {proxy.url}" in page
    shot(browser, tmp_path, "01-status-anonymous")

    # With a read token in the path, the private channel and its upload appear.
    browser.get(f"{proxy.url}/t/{READ}/")
    page = text_of(browser)
    rows = browser.find_elements(By.CSS_SELECTOR, "table.channels tbody tr")
    assert [r.find_element(By.TAG_NAME, "a").text for r in rows] == ["cf", "team"]
    assert "Recent uploads" in page and "teamtool" in page
    assert READ not in page  # the snippets show a placeholder, never the token
    shot(browser, tmp_path, "02-status-with-token")

    # Browse: the channel, a subdir, a filter, a package, and download one of its files.
    browser.get(proxy.url + "/")
    click(browser, "cf")
    assert browser.current_url == f"{proxy.url}/cf/"
    page = text_of(browser)
    assert "linux-64" in page and "noarch" in page and "pixi" in page
    shot(browser, tmp_path, "03-channel")
    click(browser, "linux-64")
    names = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "table.packages a")]
    assert names == ["datatool", "libcore", "libzlib"]
    box = browser.find_element(By.NAME, "q")
    box.send_keys("lib")
    navigated(browser, box.submit)
    names = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "table.packages a")]
    assert names == ["libcore", "libzlib"] and "2 packages" in text_of(browser)
    shot(browser, tmp_path, "04-subdir-filtered")
    browser.get(f"{proxy.url}/cf/linux-64/")
    click(browser, "datatool")
    files = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "table.files a.download")]
    assert sorted(files) == ["datatool-0.9-h0.conda", "datatool-1.0-h2.conda"]
    shot(browser, tmp_path, "05-package")
    click(browser, "datatool-1.0-h2.conda")
    got = downloaded(browser.downloads, "datatool-1.0-h2.conda")
    assert got == (channel_dir / "linux-64" / "datatool-1.0-h2.conda").read_bytes()


def test_a_private_channel_page_needs_its_token_in_the_browser(
    browser, upstream, start_proxy, tmp_path: Path
):
    proxy = start_proxy({"team": {"upstream": upstream.url, "private": True}}, tokens=TOKENS)
    browser.get(f"{proxy.url}/team/")  # 401: the browser asks for basic auth, shows nothing
    assert "linux-64" not in text_of(browser)
    browser.get(f"{proxy.url}/t/{READ}/team/")
    page = text_of(browser)
    assert "team" in page and "linux-64" in page
    assert f"{proxy.url}/t/<YOUR-TOKEN>/team" in page and READ not in page
    shot(browser, tmp_path, "06-private-channel")
    click(browser, "linux-64")
    names = [a.text for a in browser.find_elements("css selector", "table.packages a")]
    assert names == ["datatool", "libcore", "libzlib"]
    assert browser.current_url == f"{proxy.url}/t/{READ}/team/linux-64/"


def test_a_browser_that_cannot_be_installed_fails_with_apts_words(monkeypatch, tmp_path):
    calls: list[tuple[str, ...]] = []

    def broken_apt(*args: str) -> subprocess.CompletedProcess[str]:
        calls.append(args)
        return subprocess.CompletedProcess(args, 100, "", "E: Unable to locate package chromium")

    monkeypatch.setattr(sys.modules[__name__], "CHROMIUM", tmp_path / "no-chromium")
    with pytest.raises(pytest.fail.Exception, match="Unable to locate package chromium"):
        ensure_chromium(broken_apt)
    assert calls == [("install", "-y", *PACKAGES), ("update",), ("install", "-y", *PACKAGES)]
