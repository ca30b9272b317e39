"""Opens every page of the built documentation site in headless Chromium and checks it.

Usage: `python scripts/docs_check.py [SITE]` (default `site`), after `make docs`;
`make docs-check` does both.

The site is served on 127.0.0.1 (a free port, for the duration of the check) and
each page is loaded by Debian's Chromium, driven over its DevTools protocol. A
page passes when:

- no request failed (network error or HTTP status >= 400) and none left the
  site: the browser resolves no host name but 127.0.0.1, as on a machine
  without internet access;
- nothing was logged to the console as an error and no script threw;
- every `<img>` has loaded (`naturalWidth > 0`);
- every formula was typeset by MathJax: each `.arithmatex` element holds an
  `mjx-container`, no TeX error (`mjx-merror`) is shown, and no raw `$$`,
  `\\(`, `\\)`, `\\[` or `\\]` is left in the text outside code;
- nothing overflows at the 1280 px width: every display formula fits its
  content column whole (no horizontal scroll: the site shrinks a wide one to
  fit), and every code block's text lies inside the column, wrapped or in a
  box that scrolls horizontally. Text clipped where it cannot be scrolled to,
  or drawn past the column, fails with the page, the element and its heading.

The gradient guide is also opened from `file://`, where its formulas must be
typeset as well. Screenshots of the home page, of the gradient guide and of a
page with figures are saved in `SITE/docs-check/`.
"""

from __future__ import annotations

import argparse
import base64
import functools
import http.server
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import websocket

WIDTH, HEIGHT = 1280, 900
MAX_SCREENSHOT_HEIGHT = 6000
PAGE_TIMEOUT_S = 60.0
SCREENSHOTS = {
    "index.html": "home.png",
    "guide/gradient.html": "gradient.png",
    "guide/why-cross-entropy.html": "why-cross-entropy.png",  # figures
}
FILE_URL_PAGE = "guide/gradient.html"

# Runs in the page: waits (bounded) for images, fonts and MathJax, then reports.
PAGE_REPORT_JS = r"""
(async () => {
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const deadline = Date.now() + %(timeout_ms)d;
  for (const img of document.images) img.loading = "eager";
  await Promise.all([...document.images].map((img) => img.complete ? null :
    new Promise((r) => { img.addEventListener("load", r); img.addEventListener("error", r); })));
  const math = () => [...document.querySelectorAll(".arithmatex")];
  const pending = () => math().filter((el) => !el.querySelector("mjx-container"));
  if (math().length) {
    while (!(window.MathJax && MathJax.startup && MathJax.startup.promise) && Date.now() < deadline)
      await sleep(50);
    if (window.MathJax && MathJax.startup && MathJax.startup.promise) await MathJax.startup.promise;
    while (pending().length && Date.now() < deadline) await sleep(100);
  }
  await document.fonts.ready;
  const raw = [];
  const code = "pre, code, script, style, textarea, mjx-container";
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT, {
    acceptNode: (node) => node.parentElement.closest(code)
      ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT,
  });
  const delimiters = ["$$", "\\(", "\\)", "\\[", "\\]"];
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const text = node.textContent;
    if (delimiters.some((d) => text.includes(d))) raw.push(text.trim().slice(0, 120));
  }
  // Overflow at this width. A display formula must fit its content column: a
  // reader does not expect to scroll an equation sideways on a desktop screen.
  // A code block's text must lie inside the column, wrapped or in a box that
  // scrolls horizontally; text clipped with no way to scroll to it, or drawn
  // past the column (under the table of contents), fails.
  await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
  await sleep(100);  // the page's own scripts resize formulas after typesetting
  const overflows = [];
  const line = (text) => text.trim().replace(/\s+/g, " ").slice(0, 80);
  const after = (el) => {
    const headings = [...document.querySelectorAll(".md-content :is(h1, h2, h3, h4, h5, h6)[id]")]
      .filter((h) => h.compareDocumentPosition(el) & Node.DOCUMENT_POSITION_FOLLOWING);
    return headings.length ? ` (under #${headings[headings.length - 1].id})` : "";
  };
  const column = (el) => {
    const inner = el.closest(".md-content__inner");
    const rect = inner.getBoundingClientRect(), style = getComputedStyle(inner);
    return {left: rect.left + parseFloat(style.paddingLeft),
            right: rect.right - parseFloat(style.paddingRight), inner};
  };
  // Where the content of `el` (from `start` to `end`) can be seen: cut by a box
  // that clips it, or bounded by a box that scrolls it (a problem unless
  // `scrolls`); then against the column.
  const placement = (el, start, end, scrolls) => {
    const {left, right, inner} = column(el);
    for (let node = el; node && node !== inner; node = node.parentElement) {
      const edge = node.getBoundingClientRect();
      if (start >= edge.left - 1 && end <= edge.right + 1) continue;
      const overflow = getComputedStyle(node).overflowX;
      if ((overflow === "auto" || overflow === "scroll") && scrolls) {
        [start, end] = [Math.max(start, edge.left), Math.min(end, edge.right)];
      } else if (overflow !== "visible") {
        const name = node.tagName.toLowerCase() + [...node.classList].map((c) => "." + c).join("");
        return `is cut off by ${name} (overflow-x: ${overflow}): ` +
          `${Math.round(Math.max(end - edge.right, edge.left - start))} px out of view`;
      }
    }
    if (end > right + 1 || start < left - 1)
      return `reaches ${Math.round(Math.max(end - right, left - start))} px past its column ` +
        `(${Math.round(left)}-${Math.round(right)} px; ` +
        `content ${Math.round(start)}-${Math.round(end)} px)`;
    return null;
  };
  const formulas = [...document.querySelectorAll('.md-content mjx-container[display="true"]')]
    .filter((el) => !el.parentElement.closest("mjx-container"));
  for (const el of formulas) {
    const math = el.querySelector(":scope > mjx-math");
    if (!math || !math.getClientRects().length) continue;
    const rect = math.getBoundingClientRect(), {left, right} = column(el);
    const problem = rect.width > right - left + 1
      ? `is ${Math.round(rect.width)} px wide, wider than its ${Math.round(right - left)} px column`
      : placement(el, rect.left, rect.right, false);
    if (problem) overflows.push(`formula "${line(el.textContent)}"${after(el)} ${problem}`);
  }
  for (const pre of document.querySelectorAll(".md-content pre")) {
    const el = pre.querySelector(":scope > code") || pre;
    if (!el.getClientRects().length) continue;
    const text = document.createRange();
    text.selectNodeContents(el);
    const box = el.getBoundingClientRect(), rect = text.getBoundingClientRect();
    const problem = placement(el, Math.min(box.left, rect.left),
                              Math.max(box.right, rect.right, box.left + el.scrollWidth), true);
    if (problem) overflows.push(`code block "${line(el.textContent)}"${after(el)} ${problem}`);
  }
  return {
    title: document.title,
    overflows: [...new Set(overflows)],
    mathjax: window.MathJax && MathJax.version ? MathJax.version : null,
    formulas: math().length,
    typeset: [...document.querySelectorAll("mjx-container")]
      .filter((el) => !el.parentElement.closest("mjx-container")).length,
    untypeset: pending().map((el) => el.textContent.trim().slice(0, 120)),
    tex_errors: [...document.querySelectorAll("mjx-merror")].map(
      (el) => el.getAttribute("data-mjx-error") || el.textContent.slice(0, 120)),
    raw_delimiters: raw,
    images: document.images.length,
    broken_images: [...document.images].filter((img) => !(img.naturalWidth > 0))
      .map((img) => img.src),
    height: Math.ceil(document.documentElement.scrollHeight),
  };
})()
"""


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def serve(root: pathlib.Path) -> Iterator[str]:
    """Serves `root` on 127.0.0.1 on a free port until the block ends."""
    handler = functools.partial(QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def find_chromium() -> str:
    for name in (os.environ.get("CHROMIUM", ""), "chromium", "chromium-browser"):
        if name and (path := shutil.which(name)):
            return path
    sys.exit("docs-check: Chromium not found; install Debian's package: apt-get install chromium")


class Browser:
    """Headless Chromium and one tab, driven over the DevTools protocol."""

    def __init__(self, executable: str, profile: pathlib.Path) -> None:
        args = [
            executable,
            "--headless",
            "--no-sandbox",  # CI runs as root
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-extensions",
            "--disable-sync",
            "--hide-scrollbars",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            f"--window-size={WIDTH},{HEIGHT}",
            "about:blank",
        ]
        self.log = open(profile.parent / "chromium.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT
        )
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.is_file() and len(port_file.read_text().split()) == 2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                log = (profile.parent / "chromium.log").read_text()[-3000:]
                sys.exit(f"docs-check: Chromium did not start:\n{log}")
            time.sleep(0.1)
        port, path = port_file.read_text().split()
        self.ws = websocket.create_connection(
            f"ws://127.0.0.1:{port}{path}", timeout=PAGE_TIMEOUT_S, suppress_origin=True
        )
        self.next_id = 0
        self.events: list[dict[str, Any]] = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        for domain in ("Page", "Network", "Runtime", "Log"):
            self.call(f"{domain}.enable", session=True)
        self.call(
            "Emulation.setDeviceMetricsOverride",
            session=True,
            width=WIDTH,
            height=HEIGHT,
            deviceScaleFactor=1,
            mobile=False,
        )

    def call(self, method: str, session: bool = False, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        self.ws.send(json.dumps(message))
        while True:
            reply = json.loads(self.ws.recv())
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def wait_for(self, method: str, timeout: float) -> bool:
        """Collects events until `method` arrives from the tab (True) or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(e["method"] == method for e in self.events):
                return True
            self.ws.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                message = json.loads(self.ws.recv())
            except websocket.WebSocketTimeoutException:
                break
            finally:
                self.ws.settimeout(PAGE_TIMEOUT_S)
            if "method" in message:
                self.events.append(message)
        return any(e["method"] == method for e in self.events)

    def drain(self, quiet_s: float = 0.3) -> None:
        """Collects events until none came for `quiet_s` seconds."""
        self.ws.settimeout(quiet_s)
        try:
            while True:
                message = json.loads(self.ws.recv())
                if "method" in message:
                    self.events.append(message)
        except websocket.WebSocketTimeoutException:
            pass
        finally:
            self.ws.settimeout(PAGE_TIMEOUT_S)

    def open(self, url: str, site_url: str) -> dict[str, Any]:
        """Loads `url` and returns its report with the problems seen on the way.

        Requests for anything outside `site_url` are problems.
        """
        self.events = []
        self.call("Page.navigate", session=True, url=url)
        loaded = self.wait_for("Page.loadEventFired", PAGE_TIMEOUT_S)
        script = PAGE_REPORT_JS % {"timeout_ms": int(PAGE_TIMEOUT_S * 500)}
        result = self.call(
            "Runtime.evaluate",
            session=True,
            expression=script,
            awaitPromise=True,
            returnByValue=True,
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{url}: {result['exceptionDetails']}")
        report = result["result"]["value"]
        self.drain()
        report["problems"] = self._problems(site_url, loaded)
        return report

    def _problems(self, site_url: str, loaded: bool) -> list[str]:
        problems = [] if loaded else [f"no load event within {PAGE_TIMEOUT_S:.0f} s"]
        requests: dict[str, str] = {}
        for event in self.events:
            method, params = event["method"], event.get("params", {})
            if method == "Network.requestWillBeSent":
                request_url = params["request"]["url"]
                requests[params["requestId"]] = request_url
                if not request_url.startswith((site_url, "data:", "blob:", "about:")):
                    problems.append(f"request outside the site: {request_url}")
            elif method == "Network.loadingFailed":
                request_url = requests.get(params["requestId"], params["requestId"])
                problems.append(f"failed request: {request_url} ({params.get('errorText')})")
            elif method == "Network.responseReceived" and params["response"]["status"] >= 400:
                response = params["response"]
                problems.append(f"HTTP {response['status']}: {response['url']}")
            elif method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                text = details.get("exception", {}).get("description") or details.get("text")
                problems.append(f"script error: {text}")
            elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                args = params.get("args", [])
                text = " ".join(str(a.get("value", a.get("description", ""))) for a in args)
                problems.append(f"console.{params['type']}: {text}")
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                entry = params["entry"]
                problems.append(f"console error: {entry['text']} {entry.get('url', '')}".strip())
        return problems

    def screenshot(self, path: pathlib.Path, height: int) -> None:
        height = max(HEIGHT, min(height, MAX_SCREENSHOT_HEIGHT))
        clip = {"x": 0, "y": 0, "width": WIDTH, "height": height, "scale": 1}
        shot = self.call(
            "Page.captureScreenshot",
            session=True,
            format="png",
            clip=clip,
            captureBeyondViewport=True,
        )
        path.write_bytes(base64.b64decode(shot["data"]))

    def close(self) -> None:
        if getattr(self, "ws", None) is not None:
            try:
                self.ws.close()
            except OSError:
                pass
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.log.close()


def page_failures(report: dict[str, Any]) -> list[str]:
    failures = list(report["problems"])
    failures += [f"image not loaded: {src}" for src in report["broken_images"]]
    if report["formulas"] and not report["mathjax"]:
        failures.append("MathJax is not loaded")
    failures += [f"formula not typeset: {text}" for text in report["untypeset"]]
    failures += [f"TeX error: {text}" for text in report["tex_errors"]]
    failures += [f"raw TeX delimiters in text: {text!r}" for text in report["raw_delimiters"]]
    failures += [f"overflow at {WIDTH} px: {text}" for text in report["overflows"]]
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("site", nargs="?", type=pathlib.Path, default=pathlib.Path("site"))
    args = parser.parse_args(argv)
    site = args.site.resolve()
    pages = sorted(p.relative_to(site).as_posix() for p in site.rglob("*.html"))
    if "index.html" not in pages:
        sys.exit(f"docs-check: {site} holds no built site; run `make docs` first")
    shots = site / "docs-check"
    shots.mkdir(exist_ok=True)
    start = time.monotonic()
    passed, failed = 0, 0
    with tempfile.TemporaryDirectory(prefix="docs-check-") as tmp, serve(site) as base:
        profile = pathlib.Path(tmp) / "profile"
        profile.mkdir()
        browser = Browser(find_chromium(), profile)
        try:
            urls = [(page, base + page, base) for page in pages]
            file_url = (site / FILE_URL_PAGE).as_uri()
            urls.append((f"{FILE_URL_PAGE} (file://)", file_url, site.as_uri() + "/"))
            for i, (name, url, site_url) in enumerate(urls, 1):
                report = browser.open(url, site_url)
                failures = page_failures(report)
                status = "FAIL" if failures else "ok"
                print(
                    f"[{i}/{len(urls)}] {status} {name}: {report['images']} images, "
                    f"{report['formulas']} formulas, {report['typeset']} typeset",
                    flush=True,
                )
                for failure in failures:
                    print(f"    {failure}", flush=True)
                passed, failed = passed + (not failures), failed + bool(failures)
                if url.startswith(base) and name in SCREENSHOTS:
                    path = shots / SCREENSHOTS[name]
                    browser.screenshot(path, report["height"])
                    print(f"    screenshot {path.relative_to(site.parent)}", flush=True)
        finally:
            browser.close()
    seconds = time.monotonic() - start
    print(f"checked {passed + failed} pages in {seconds:.1f} s")
    print(f"docs-check: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
