"""The status page in a real browser: Debian's headless Chromium driven through chromedriver by Selenium,
against the real daemon and reference receiver (processes). Sign in (and a wrong token refused), an upload
by drag and drop, a failed ingestion's error and a resume from the page, a reject file downloaded byte for
byte, keyboard navigation, contrast, and screenshots of each view at two sizes that must not be blank.

PIMINGESTD_SCREENSHOTS=docs/img also writes the 1280x800 screenshots there (the README shows them)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.server
import io
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from html import escape
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver

from pimingestd.testing import Cluster, free_port

from .helpers import REPO, product, report
from .test_inbox import inbox_config

TOKEN = "ui-test-token-7f3a9c"
SIZES = {"wide": (1280, 800), "narrow": (390, 844)}


def _chromium() -> tuple[str, str]:
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not browser or not driver:
        pytest.fail("Debian's chromium and chromium-driver are needed (.ci/run installs them)")
    return browser, driver


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    yield from _browser(tmp_path)


def _browser(tmp_path: Path, *extra: str) -> Iterator[WebDriver]:
    binary, driver_path = _chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,800"):
        options.add_argument(arg)
    for arg in extra:
        options.add_argument(arg)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.downloads = downloads  # type: ignore[attr-defined]
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
async def cluster(tmp_path: Path) -> Any:
    c = Cluster(
        tmp_path,
        http={"api_token": TOKEN},
        inbox=inbox_config(tmp_path, settle_seconds=0.2),
        delivery={"ack_timeout": 5.0, "backoff": 0.05, "max_attempts": 5},
        chunking={"records": 10},
    )
    async with c:
        yield c


def until(what: str, check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except Exception:  # an element not there yet, a stale one
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def sign_in(driver: WebDriver, url: str, token: str = TOKEN) -> None:
    driver.get(url + "/")
    field = until(
        "the sign-in form",
        lambda: driver.find_element(By.ID, "token") if driver.find_element(By.ID, "token").is_displayed() else None,
    )
    field.send_keys(token)
    field.send_keys(Keys.ENTER)


def visible(driver: WebDriver, css: str) -> bool:
    elements = driver.find_elements(By.CSS_SELECTOR, css)
    return bool(elements) and elements[0].is_displayed()


def text(driver: WebDriver, css: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, css).text)


def drop(driver: WebDriver, name: str, data: bytes) -> None:
    """A real file through a DataTransfer, dropped on the page's drop zone."""
    driver.execute_script(
        """
        const [b64, name] = arguments;
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const dt = new DataTransfer();
        dt.items.add(new File([bytes], name, {type: "application/octet-stream"}));
        const zone = document.querySelector("#dropzone");
        for (const type of ["dragenter", "dragover", "drop"]) {
          zone.dispatchEvent(new DragEvent(type, {bubbles: true, cancelable: true, dataTransfer: dt}));
        }
        """,
        base64.b64encode(data).decode(),
        name,
    )


def distinct_colours(png: bytes) -> int:
    image = Image.open(io.BytesIO(png)).convert("RGB")
    return len(image.getcolors(maxcolors=1 << 24) or [])


def shoot(driver: WebDriver, out: Path, view: str, size: str, must: list[str]) -> None:
    width, height = SIZES[size]
    driver.execute_script("document.activeElement && document.activeElement.blur()")
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": size == "narrow"},
    )
    time.sleep(0.4)
    png = driver.get_screenshot_as_png()
    (out / f"{view}-{width}x{height}.png").write_bytes(png)
    image = Image.open(io.BytesIO(png))
    assert image.size == (width, height), image.size
    assert distinct_colours(png) >= 12, f"{view} at {size} looks blank"
    page = driver.find_element(By.TAG_NAME, "body").text
    for word in must:
        assert word in page, (view, size, word)
    publish = os.environ.get("PIMINGESTD_SCREENSHOTS")
    if publish and size == "wide":
        target = (REPO / publish) if not Path(publish).is_absolute() else Path(publish)
        target.mkdir(parents=True, exist_ok=True)
        (target / f"{view}.png").write_bytes(png)


async def test_sign_in_with_the_token_and_a_wrong_one_is_refused(cluster: Cluster, browser: WebDriver) -> None:
    sign_in(browser, cluster.durl, "not-the-token")
    until("the refusal", lambda: "wrong token" in text(browser, "#login-error"))
    assert not visible(browser, "#list")
    field = browser.find_element(By.ID, "token")
    field.send_keys(TOKEN)
    field.send_keys(Keys.ENTER)
    until("the list", lambda: visible(browser, "#list"))
    # Once in the URL fragment: kept for the session, gone from the address bar; never in a URL sent.
    browser.execute_script("sessionStorage.clear()")
    browser.get(cluster.durl + "/#token=" + TOKEN)
    until("the list", lambda: visible(browser, "#list"))
    assert TOKEN not in browser.current_url
    assert TOKEN not in browser.page_source
    assert TOKEN not in cluster.log.read_text()


async def test_a_file_dropped_on_the_page_is_uploaded_and_its_progress_reaches_100(
    cluster: Cluster, browser: WebDriver
) -> None:
    await cluster.faults([{"action": "delay_ack", "seconds": 0.25, "times": 1000}])
    records = [product(i) for i in range(150)]
    data = "".join(json.dumps(r) + "\n" for r in records).encode()
    sign_in(browser, cluster.durl)
    until("the list", lambda: visible(browser, "#list"))
    browser.find_element(By.LINK_TEXT, "Upload").click()
    until("the upload view", lambda: visible(browser, "#dropzone"))
    browser.find_element(By.ID, "opt-key").send_keys("sku")  # the profile options travel as query parameters
    browser.find_element(By.ID, "opt-delta").click()
    drop(browser, "dropped.jsonl", data)
    until("the upload's answer", lambda: "Taken" in text(browser, "#upload-message"))
    seen = browser.execute_script("return window.__uploadProgress")
    assert seen and seen[-1] == 100, seen
    browser.find_element(By.LINK_TEXT, "dropped.jsonl").click()
    values = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        now = browser.find_element(By.ID, "detail-progress").get_attribute("aria-valuenow")
        if now is not None:
            values.append(float(now))
        if text(browser, "#detail-status") == "completed":
            break
        await asyncio.sleep(0.2)
    assert text(browser, "#detail-status") == "completed"
    assert any(0 < v < 100 for v in values), f"the progress bar never moved: {sorted(set(values))}"
    until("100%", lambda: browser.find_element(By.ID, "detail-progress").get_attribute("aria-valuenow") == "100.0")
    browser.find_element(By.LINK_TEXT, "Ingestions").click()
    until("completed in the list", lambda: "completed" in text(browser, "#ingestions tbody"))
    assert "dropped.jsonl" in text(browser, "#ingestions tbody")
    [row] = await cluster.ingestions()
    assert row["source"] == "upload" and row["records_acked"] == 150 and row["delta_scope"] == "dropped.jsonl"


async def test_a_failed_ingestions_error_shows_its_place_and_resume_from_the_page_completes(
    cluster: Cluster, browser: WebDriver
) -> None:
    bad = cluster.data / "broken.jsonl"
    bad.write_text('{"sku": "A"}\n{"sku": "B"}\n{"sku": "C"}\n{"sku": oops}\n')
    broken = await cluster.ingest(bad)
    await cluster.settle(broken)
    await cluster.faults([{"action": "reject_final", "chunk": 2}])
    src = cluster.data / "resumable.jsonl"
    src.write_text("".join(json.dumps(product(i)) + "\n" for i in range(40)))
    ing = await cluster.ingest(src)
    assert (await cluster.settle(ing))["status"] == "failed"
    sign_in(browser, cluster.durl)
    until("the list", lambda: visible(browser, "#list"))
    browser.get(f"{cluster.durl}/#/ingestion/{broken}")
    until("the parse error", lambda: "line 4" in text(browser, "#detail-error"))
    assert "broken.jsonl" in text(browser, "#detail-error")
    assert not visible(browser, "#download-rejects")
    browser.get(f"{cluster.durl}/#/ingestion/{ing}")
    until("the reject", lambda: "chunk 2" in text(browser, "#detail-error"))
    assert text(browser, "#detail-status") == "failed"
    browser.find_element(By.ID, "resume").click()
    browser.switch_to.alert.accept()  # the confirmation
    until("completed", lambda: text(browser, "#detail-status") == "completed", timeout=30)
    assert not visible(browser, "#detail-error") and not visible(browser, "#resume")
    assert (await cluster.status(ing))["records_acked"] == 40
    message = text(browser, "#detail-message")  # what was done, never a status left stale beside the badge
    assert message == "Resumed after chunk 1." and "queued" not in message, message


async def test_the_reject_file_downloads_byte_for_byte(cluster: Cluster, browser: WebDriver) -> None:
    await cluster.faults([{"action": "reject_records", "field": "sku", "values": ["SKU-000003", "SKU-000008"]}])
    src = cluster.data / "with-rejects.csv"
    src.write_text("sku,name\n" + "".join(f"SKU-{i:06d},Näme {i}\n" for i in range(12)))
    ing = await cluster.ingest(src)
    assert (await cluster.settle(ing))["records_rejected"] == 2
    sign_in(browser, cluster.durl)
    until("the list", lambda: visible(browser, "#list"))
    browser.get(f"{cluster.durl}/#/ingestion/{ing}")
    until("the download button", lambda: visible(browser, "#download-rejects"))
    assert "2" in text(browser, "#detail-facts")
    browser.find_element(By.ID, "download-rejects").click()
    downloads: Path = browser.downloads  # type: ignore[attr-defined]
    got = until("the downloaded file", lambda: [p for p in downloads.glob("*.csv") if p.stat().st_size > 0])
    assert got[0].name == "with-rejects.rejects.csv"
    import aiohttp

    async with (
        aiohttp.ClientSession() as s,
        s.get(f"{cluster.durl}/api/ingestions/{ing}/rejects", headers={"Authorization": f"Bearer {TOKEN}"}) as r,
    ):
        assert got[0].read_bytes() == await r.read()
    assert got[0].read_text().splitlines()[1].startswith("SKU-000003,Näme 3,")


async def test_keyboard_contrast_and_screenshots_of_every_view(
    cluster: Cluster, browser: WebDriver, tmp_path: Path
) -> None:
    await cluster.faults([{"action": "reject_records", "field": "sku", "values": ["SKU-000005"]}])
    ids = []
    for n, name in enumerate(("catalogue-2026-11-30.jsonl", "prices.jsonl", "stock.jsonl")):
        src = cluster.data / name
        src.write_text("".join(json.dumps(product(i)) + "\n" for i in range(n * 100, n * 100 + 60 + 40 * n)))
        ids.append(await cluster.ingest(src))
    for ing in ids:
        await cluster.settle(ing)
    sign_in(browser, cluster.durl)
    until("the list", lambda: "catalogue-2026-11-30.jsonl" in text(browser, "#ingestions tbody"))
    # The keyboard alone reaches every view: Tab to the Health link, Enter.
    body = browser.find_element(By.TAG_NAME, "body")
    for _ in range(12):
        body.send_keys(Keys.TAB)
        if browser.switch_to.active_element.text == "Health":
            break
        body = browser.switch_to.active_element
    assert browser.switch_to.active_element.text == "Health"
    browser.switch_to.active_element.send_keys(Keys.ENTER)
    until(
        "the health view",
        lambda: visible(browser, "#health") and "PIM-Core: last ACK" in text(browser, "#health-facts"),
    )
    # Text colours against their backgrounds: at least WCAG AA's 4.5:1.
    ratios = browser.execute_script(
        """
        const lum = (rgb) => { const [r, g, b] = rgb.match(/\\d+/g).slice(0, 3).map(Number).map((v) => {
          v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
          return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
        const bg = (el) => { for (; el; el = el.parentElement) { const c = getComputedStyle(el).backgroundColor;
          if (c && !c.startsWith("rgba(0, 0, 0, 0)")) return c; } return "rgb(255, 255, 255)"; };
        const out = [];
        for (const el of document.querySelectorAll("body, a, .badge, .muted, th, dt, button, .error-box, label")) {
          if (!el.offsetParent && el.tagName !== "BODY") continue;
          const a = lum(getComputedStyle(el).color), b = lum(bg(el));
          out.push([el.tagName + "." + el.className, (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05)]);
        }
        return out;
        """
    )
    low = [(what, round(r, 2)) for what, r in ratios if r < 4.5]
    assert ratios and not low, low
    shots = tmp_path / "screenshots"
    shots.mkdir()
    for size in SIZES:
        browser.get(cluster.durl + "/#/")
        until("the list", lambda: "catalogue-2026-11-30.jsonl" in text(browser, "#ingestions tbody"))
        until("all three", lambda: len(browser.find_elements(By.CSS_SELECTOR, "#ingestions tbody tr")) == 3)
        shoot(
            browser, shots, "ingestions", size, ["Ingestions", "catalogue-2026-11-30.jsonl", "stock.jsonl", "completed"]
        )
        browser.get(f"{cluster.durl}/#/ingestion/{ids[0]}")
        until("the timeline", lambda: browser.find_elements(By.CSS_SELECTOR, "#timeline span"))
        shoot(
            browser,
            shots,
            "ingestion",
            size,
            ["catalogue-2026-11-30.jsonl", "Chunks", "ACK latency", "Download reject file"],
        )
        browser.get(cluster.durl + "/#/health")
        until("the health view", lambda: "PIM-Core: last ACK" in text(browser, "#health-facts"))
        shoot(browser, shots, "health", size, ["Health", "ready", "records ACKed in the last hour"])
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    report(f"status page: {len(list(shots.iterdir()))} screenshots, {len(ratios)} text colours at >= 4.5:1")


async def test_the_page_is_static_strict_and_serves_nothing_else(cluster: Cluster) -> None:
    """Served without the token (it holds no data), under a strict CSP; /ui/ serves its own files only."""
    code, page = await cluster.call("GET", cluster.durl + "/")
    assert code == 200 and "<title>pimingestd</title>" in page and TOKEN not in page
    import aiohttp

    async with aiohttp.ClientSession() as s:
        async with s.get(cluster.durl + "/ui/app.js") as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/javascript")
            assert "default-src 'none'" in r.headers["Content-Security-Policy"]
        for bad in ("/ui/../config.toml", "/ui/%2e%2e%2fconfig.toml", "/ui/openapi.yaml", "/ui/nope.js"):
            async with s.get(cluster.durl + bad) as r:
                assert r.status == 404, bad
        async with s.get(cluster.durl + "/api/overview") as r:
            assert r.status == 401  # the data needs the token


async def test_the_upload_view_follows_the_dropped_files_ingestion_until_it_ends(
    cluster: Cluster, browser: WebDriver
) -> None:
    """After a drop, the upload view itself shows the ingestion live, without a reload or a click: its status
    (running, then completed) and records delivered, until it ends; never "queued" forever."""
    await cluster.faults([{"action": "delay_ack", "seconds": 0.3, "times": 1000}])
    data = "".join(json.dumps(product(i)) + "\n" for i in range(120)).encode()
    sign_in(browser, cluster.durl)
    until("the list", lambda: visible(browser, "#list"))
    browser.find_element(By.LINK_TEXT, "Upload").click()
    until("the upload view", lambda: visible(browser, "#dropzone"))
    drop(browser, "followed.jsonl", data)
    until("the upload's answer", lambda: "Taken" in text(browser, "#upload-message"))
    url = browser.current_url
    seen: list[str] = []
    bars: list[float] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        seen.append(text(browser, "#upload-message"))
        if visible(browser, "#upload-ingestion"):
            bars.append(float(browser.find_element(By.ID, "upload-ingestion").get_attribute("aria-valuenow") or 0))
        if "completed" in seen[-1]:
            break
        await asyncio.sleep(0.2)
    assert "completed" in seen[-1] and "120 / 120 records" in seen[-1], seen[-5:]
    assert any("running" in s for s in seen), f"never shown running: {sorted(set(seen))}"
    assert any(0 < b < 100 for b in bars) and bars[-1] == 100.0, sorted(set(bars))
    assert browser.current_url == url and visible(browser, "#dropzone")  # still the upload view, no reload
    [row] = await cluster.ingestions()
    assert row["status"] == "completed" and row["records_acked"] == 120


@contextlib.contextmanager
def _serve(page: str) -> Iterator[int]:
    """``page`` as text/html at / on a port of 127.0.0.1 (another origin than the daemon's), from a thread."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            data = page.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _attacker_page(daemon: str, ingest_path: Path, failed: str) -> str:
    """A page on another origin that submits text/plain forms to the daemon at once, and sends the same with
    fetch (no-cors): an ingestion of ``ingest_path`` (its name holds a "=", so name=value is valid JSON),
    a resume and a cancel of ``failed``."""
    body = json.dumps({"path": str(ingest_path), "re_ingestion": True})
    name, _, value = body.partition("=")
    forms = [
        ("/api/ingest", name, value),
        (f"/api/ingestions/{failed}/resume", '{"a": "', '"}'),
        (f"/api/ingestions/{failed}/cancel", '{"a": "', '"}'),
    ]
    html_forms = "".join(
        f'<iframe name="f{i}"></iframe><form id="form{i}" action="{daemon}{path}" method="POST" enctype="text/plain"'
        f' target="f{i}"><input name="{escape(n)}" value="{escape(v)}"></form>'
        for i, (path, n, v) in enumerate(forms)
    )
    script = (
        "window.loads = 0; window.fetched = 0;"
        "for (const f of document.querySelectorAll('iframe')) f.addEventListener('load', () => window.loads++);"
        "for (const f of document.querySelectorAll('form')) f.submit();"
        f"for (const [path, n, v] of {json.dumps(forms)})"
        f"  fetch({json.dumps(daemon)} + path, {{method: 'POST', mode: 'no-cors', body: n + '=' + v}})"
        "    .then(() => window.fetched++, () => window.fetched++);"
    )
    return f"<!doctype html><html><body>{html_forms}<script>{script}</script></body></html>"


async def test_a_page_on_another_origin_starts_resumes_and_cancels_nothing(tmp_path: Path, browser: WebDriver) -> None:
    """A daemon without a token (the example config). A page served from another origin (another port on
    127.0.0.1) auto-submits text/plain forms that parse as JSON, and sends them with fetch: no ingestion is
    started, the failed one is neither resumed nor cancelled. The status page's own calls still work: its
    Resume completes the failed ingestion."""
    c = Cluster(
        tmp_path,
        inbox=inbox_config(tmp_path, settle_seconds=0.2),
        delivery={"ack_timeout": 5.0, "backoff": 0.05, "max_attempts": 5},
        chunking={"records": 10},
    )
    async with c:
        await c.faults([{"action": "reject_final", "chunk": 2}])
        src = c.data / "resumable.jsonl"
        src.write_text("".join(json.dumps(product(i)) + "\n" for i in range(40)))
        failed = await c.ingest(src)
        assert (await c.settle(failed))["status"] == "failed"
        target = c.data / "p=.json"
        target.write_text(json.dumps([product(1)]))
        page = _attacker_page(c.durl, target, failed)

        with _serve(page) as port:  # in a thread: selenium's calls block this test's event loop
            browser.get(f"http://127.0.0.1:{port}/")
            until("the forms and fetches sent", lambda: browser.execute_script("return window.fetched") == 3)
            until("the forms answered", lambda: browser.execute_script("return window.loads") >= 3)
            await asyncio.sleep(1)  # an ingestion started by them would be listed by now
        assert [r["ingestion_id"] for r in await c.ingestions()] == [failed]
        assert (await c.status(failed))["status"] == "failed"
        browser.get(f"{c.durl}/#/ingestion/{failed}")  # the page itself: same origin, no token needed
        until("the resume button", lambda: visible(browser, "#resume"))
        browser.find_element(By.ID, "resume").click()
        browser.switch_to.alert.accept()
        until("completed", lambda: text(browser, "#detail-status") == "completed", timeout=30)
        assert (await c.status(failed))["records_acked"] == 40


@pytest.fixture
def rebinding_browser(tmp_path: Path) -> Iterator[WebDriver]:
    """A browser in which rebind.test resolves to 127.0.0.1, as a DNS rebinding attacker's name would."""
    yield from _browser(tmp_path, "--host-resolver-rules=MAP rebind.test 127.0.0.1")


async def test_a_page_whose_name_was_rebound_to_the_daemon_reads_and_starts_nothing(
    tmp_path: Path, rebinding_browser: WebDriver
) -> None:
    """A daemon without a token. A page at http://rebind.test:<daemon port>/ (its name now resolving to
    127.0.0.1) is same-origin with the daemon for the browser, but its Host names it: the page, the API and
    an ingestion started from its script are refused (403). The same browser at 127.0.0.1 gets the page."""
    c = Cluster(tmp_path, inbox=inbox_config(tmp_path, settle_seconds=0.2), chunking={"records": 10})
    async with c:
        src = c.data / "p.json"
        src.write_text(json.dumps([product(1)]))
        rebound = f"http://rebind.test:{c.dport}"
        rebinding_browser.get(rebound + "/api/ingestions")
        until("the refusal", lambda: "unknown Host" in rebinding_browser.page_source)
        answer = json.loads(rebinding_browser.find_element(By.TAG_NAME, "body").text)
        assert answer["error"] == "unknown Host" and "allowed_hosts" in answer["detail"], answer
        rebinding_browser.get(rebound + "/")
        until("the refusal", lambda: "unknown Host" in rebinding_browser.page_source)
        codes = rebinding_browser.execute_async_script(
            """
            const [path, done] = arguments;
            const post = fetch("/api/ingest", {method: "POST", headers: {"Content-Type": "application/json"},
                                               body: JSON.stringify({path})}).then((r) => r.status);
            Promise.all([post, fetch("/api/ingestions").then((r) => r.status)]).then(done, (e) => done(String(e)));
            """,
            str(src),
        )
        assert codes == [403, 403], codes
        assert await c.ingestions() == []
        rebinding_browser.get(c.durl + "/")
        until("the list", lambda: visible(rebinding_browser, "#list"))


def drop_many(driver: WebDriver, drops: list[dict[str, bytes]]) -> None:
    """Drops of several real files each (a DataTransfer per drop) on the page's drop zone, one right after
    the other in one script: a drop comes while the files of the one before are still being uploaded."""
    driver.execute_script(
        """
        const [drops] = arguments;
        const zone = document.querySelector("#dropzone");
        for (const files of drops) {
          const dt = new DataTransfer();
          for (const [name, b64] of files) {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            dt.items.add(new File([bytes], name, {type: "application/octet-stream"}));
          }
          for (const type of ["dragenter", "dragover", "drop"]) {
            zone.dispatchEvent(new DragEvent(type, {bubbles: true, cancelable: true, dataTransfer: dt}));
          }
        }
        """,
        [
            [[name, base64.b64encode(data).decode()] for name, data in drop.items()] for drop in drops
        ],  # lists keep the order
    )


async def test_every_file_of_a_drop_is_uploaded_and_followed_also_after_a_reload(
    cluster: Cluster, browser: WebDriver
) -> None:
    """Three files dropped at once, and a fourth dropped while they upload: each is uploaded (not only the
    first), a refused one says so in its own line and the others go on, the same bytes under another name
    follow the ingestion that has them, and every taken file is followed live on the upload view. The page
    reloaded in the middle picks them up again and follows them until they end, through a crash and restart
    of the daemon too."""
    await cluster.faults([{"action": "delay_ack", "seconds": 0.3, "times": 1000}])
    one = "".join(json.dumps(product(i)) + "\n" for i in range(60)).encode()
    two = "".join(json.dumps(product(i)) + "\n" for i in range(100, 140)).encode()
    sign_in(browser, cluster.durl)
    until("the list", lambda: visible(browser, "#list"))
    browser.find_element(By.LINK_TEXT, "Upload").click()
    until("the upload view", lambda: visible(browser, "#dropzone"))
    drop_many(browser, [{"one.jsonl": one, "refused.parquet": b"PAR1", "two.jsonl": two}, {"again.jsonl": one}])

    async def names() -> set[str]:
        return {r["file_name"] for r in await cluster.ingestions()}

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and "two.jsonl" not in await names():
        await asyncio.sleep(0.2)
    assert "two.jsonl" in await names(), f"only {sorted(await names())} uploaded from a drop of four files"
    lines = until("a line per file", lambda: len(browser.find_elements(By.CSS_SELECTOR, "#upload-taken li")) == 4)
    assert lines and visible(browser, "#upload-taken")
    items = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#upload-taken li")]
    assert items[1].startswith("Refused (415): refused.parquet"), items
    assert [i.split(" ")[1] for i in (items[0], items[2], items[3])] == ["one.jsonl", "two.jsonl", "again.jsonl"]
    browser.refresh()  # in the middle: the ingestions are still running (ACKs take 0.3 s, 10 chunks)
    until("the upload view again", lambda: visible(browser, "#dropzone"))
    until("the taken files again", lambda: len(browser.find_elements(By.CSS_SELECTOR, "#upload-taken li")) == 3)
    assert not all("completed" in li.text for li in browser.find_elements(By.CSS_SELECTOR, "#upload-taken li"))
    await cluster.kill_daemon()  # and the daemon dies under the page, and comes back
    await cluster.start_daemon()

    def ended() -> bool:
        got = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#upload-taken li")]
        return len(got) == 3 and all("completed" in g for g in got)

    until("the three taken files followed to their end after the reload", ended, timeout=60)
    after = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#upload-taken li")]
    assert "60 / 60 records" in after[0] and "40 / 40 records" in after[1] and "60 / 60 records" in after[2], after
    rows = {r["file_name"]: r for r in await cluster.ingestions()}
    assert sorted(rows) == ["one.jsonl", "two.jsonl"], rows
    assert rows["one.jsonl"]["status"] == rows["two.jsonl"]["status"] == "completed", rows
