"""Headless Chromium for the page tests: find it, load a page (``--dump-dom``), or drive it in real time.

Every host but 127.0.0.1 is unresolvable in the browser (``--host-resolver-rules``) and ``--log-net-log``
records every request the pages made, so that a request to another host shows even though it cannot succeed.
The one-shot loader (:func:`browse`), the net log reader (:func:`requested_urls`), the flags and the HTML asset
helpers are those of tests/publishing/test_pages.py, imported, not copied; this module adds :class:`DevTools`,
a browser driven through the DevTools protocol over a pipe, for pages that draw on animation frames (which
``--virtual-time-budget`` hardly advances), such as the OpenLayers tiles preview.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import math
import os
import select
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lxml.html
import numpy as np
import pytest
from PIL import Image

from tests.publishing.test_pages import CHROMIUM_FLAGS, browse, external, loaded_urls, requested_urls

__all__ = ["CHROMIUM_FLAGS", "DevTools", "Response", "assert_cjk_renders", "browse", "cjk_font_installed",
           "cjk_verdict", "colour_near", "external", "find_chromium", "inline_scripts", "loaded_urls",
           "requested_urls", "text_of"]

WINDOW = (1280, 2000)  #: the DevTools browser's window: tall enough that a sticky footer does not cover a map


def find_chromium(what: str) -> str:
    """The Chromium executable; else skip the test (fail it when ``CI=true``), saying which tests need it."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    reason = (f"headless Chromium is not installed (as root: apt-get install -y chromium; scripts/setup.sh does "
              f"this); {what} cannot run")
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def text_of(doc: lxml.html.HtmlElement, xpath: str) -> str:
    """The text of the elements ``xpath`` selects, whitespace collapsed, joined by spaces."""
    return " ".join(" ".join(el.text_content().split()) for el in doc.xpath(xpath))


def colour_near(image: Image.Image, pixel: tuple[float, float], rgb: tuple[int, int, int],
                radius: int = 12) -> tuple[float, float, int]:
    """Centroid (x, y) and count of the pixels of colour ``rgb`` (give or take 24 in all) within ``radius`` of
    ``pixel`` in a screenshot: where a marker of that colour was drawn, to a fraction of a pixel."""
    pixels = np.asarray(image.convert("RGB"), dtype=int)
    x0, y0 = max(0, round(pixel[0]) - radius), max(0, round(pixel[1]) - radius)
    window = pixels[y0:round(pixel[1]) + radius + 1, x0:round(pixel[0]) + radius + 1]
    ys, xs = np.nonzero(np.abs(window - np.array(rgb)).sum(axis=2) < 24)
    if not len(xs):
        return math.nan, math.nan, 0
    return float(x0 + xs.mean() + 0.5), float(y0 + ys.mean() + 0.5), len(xs)


def inline_scripts(doc: lxml.html.HtmlElement) -> list[str]:
    """The text of every inline ``<script>`` of a page."""
    return [script.text_content() for script in doc.xpath("//script[not(@src)]")]


@dataclass(frozen=True)
class Response:
    """An HTTP response a page received (``status`` 0: the request failed, ``error`` says why)."""

    url: str
    status: int
    error: str = ""


class DevTools:
    """Headless Chromium driven through the DevTools protocol over a pipe, in real time.

    With ``--remote-debugging-pipe`` the browser reads NUL-terminated JSON commands on its fd 3 and writes
    answers and events on its fd 4 (set up by ``bash``: ``sh`` takes one-digit fd numbers only). Events are
    read while a command waits for its answer: uncaught JavaScript errors go to :attr:`exceptions`, the
    pages' HTTP responses and failed requests to :attr:`responses`. The net log is complete once the browser
    has closed: :meth:`close` gives the URLs the pages requested.
    """

    def __init__(self, chromium: str, tmp_path: Path, window: tuple[int, int] = WINDOW) -> None:
        stamp = time.monotonic_ns()
        self.window = window
        self.netlog = tmp_path / f"netlog-{stamp}.json"
        command = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / f'profile-{stamp}'}",
                   f"--log-net-log={self.netlog}", "--net-log-capture-mode=Default",
                   "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", f"--window-size={window[0]},{window[1]}",
                   "--force-device-scale-factor=1", "--remote-debugging-pipe", "about:blank"]
        browser_in, self._to_browser = os.pipe()
        self._from_browser, browser_out = os.pipe()
        with (tmp_path / f"chromium-{stamp}.log").open("wb") as log:
            shell = f'exec "$@" 3<&{browser_in} 4>&{browser_out}'  # the pipes' ends as the browser's fds 3 and 4
            self.proc = subprocess.Popen(["bash", "-c", shell, "bash", *command], pass_fds=(browser_in, browser_out),
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        os.close(browser_in)
        os.close(browser_out)
        self._buffer = b""
        self._last_id = 0
        self._requests: dict[str, str] = {}  # request id → URL
        self.exceptions: list[str] = []  #: uncaught JavaScript errors of the pages
        self.responses: list[Response] = []  #: every response the pages received, and every failed request

    def _note(self, event: dict[str, Any]) -> None:
        method, params = event.get("method"), event.get("params") or {}
        if method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            self.exceptions.append(str(details.get("exception", {}).get("description") or details.get("text")))
        elif method == "Network.requestWillBeSent":
            self._requests[params["requestId"]] = params["request"]["url"]
        elif method == "Network.responseReceived":
            self.responses.append(Response(params["response"]["url"], int(params["response"]["status"])))
        elif method == "Network.loadingFailed" and not params.get("canceled"):
            url = self._requests.get(params["requestId"], "?")
            self.responses.append(Response(url, 0, str(params.get("errorText") or params.get("blockedReason"))))

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None,
             timeout: float = 30) -> dict[str, Any]:
        """Send a command and wait for its answer (noting the events that come before it)."""
        self._last_id += 1
        message: dict[str, Any] = {"id": self._last_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" not in self._buffer:
                ready, _, _ = select.select([self._from_browser], [], [], max(0.0, deadline - time.monotonic()))
                if not ready:
                    pytest.fail(f"chromium did not answer {method} within {timeout} s")
                chunk = os.read(self._from_browser, 1 << 16)
                if not chunk:
                    pytest.fail(f"chromium closed the DevTools pipe during {method}")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            answer = json.loads(raw)
            self._note(answer)
            if answer.get("id") == self._last_id:
                assert "error" not in answer, f"{method}: {answer['error']}"
                return dict(answer.get("result", {}))

    def open(self, url: str, headers: dict[str, str] | None = None) -> str:
        """A new tab loading ``url`` (its network and errors watched), sending ``headers`` (e.g.
        ``Accept-Language``) with every request; its session id."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = str(self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"])
        for domain in ("Runtime", "Page", "Network"):
            self.call(f"{domain}.enable", session=session)
        if headers:
            self.call("Network.setExtraHTTPHeaders", {"headers": headers}, session=session)
        self.call("Page.navigate", {"url": url}, session=session)
        return session

    def evaluate(self, session: str, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True},
                           session=session)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def wait_for(self, session: str, expression: str, timeout: float = 45) -> Any:
        """Poll ``expression`` until it is truthy; its value."""
        deadline = time.monotonic() + timeout
        while not (value := self.evaluate(session, expression)):
            if time.monotonic() > deadline:
                pytest.fail(f"still false after {timeout} s: {expression} (page errors: {self.exceptions})")
            time.sleep(0.2)
        return value

    def screenshot(self, session: str, x: float, y: float, width: float, height: float) -> Image.Image:
        """The page's pixels in a rectangle of CSS pixels, inside the window (capturing beyond it would resize
        the page, and a map would draw again)."""
        assert x + width <= self.window[0] and y + height <= self.window[1], "the rectangle is not inside the window"
        clip = {"x": x, "y": y, "width": width, "height": height, "scale": 1}
        shot = self.call("Page.captureScreenshot", {"format": "png", "clip": clip, "captureBeyondViewport": False},
                         session=session)
        return Image.open(io.BytesIO(base64.b64decode(shot["data"]))).convert("RGB")

    def close(self) -> list[str]:
        """Close the browser (bounded waits); every URL the pages requested, from the net log."""
        with contextlib.suppress(OSError):  # no answer awaited: the browser closes the pipe as it exits
            os.write(self._to_browser, b'{"id": 0, "method": "Browser.close"}\0')
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # the group this object started (start_new_session=True)
        self.proc.wait(timeout=10)
        os.close(self._to_browser)
        os.close(self._from_browser)
        return requested_urls(self.netlog)


# --- Chinese glyphs ------------------------------------------------------------------------------------------

CJK_FONT_HINT = "no CJK font: as root, apt-get install -y fonts-noto-cjk (scripts/setup.sh does this)"

#: Draws, on a canvas in the element's own computed font, up to 12 distinct CJK characters of the element's text
#: and a reference no font has (U+10FFFD, plane 16 private use): ink count and a hash of the pixels of each.
_GLYPHS_JS = r"""
(function (selector) {
  var el = document.querySelector(selector);
  if (!el) { return {error: 'no element matches ' + selector}; }
  var text = el.innerText || el.textContent || '';
  var chars = Array.from(new Set(Array.from(text).filter(function (c) {
    return /[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]/.test(c); }))).slice(0, 12);
  var cs = window.getComputedStyle(el);
  var font = cs.fontStyle + ' ' + cs.fontWeight + ' 32px ' + cs.fontFamily;
  var canvas = document.createElement('canvas');
  canvas.width = 48; canvas.height = 48;
  var ctx = canvas.getContext('2d', {willReadFrequently: true});
  function draw(c) {
    ctx.clearRect(0, 0, 48, 48);
    ctx.font = font; ctx.fillStyle = '#000'; ctx.textBaseline = 'top';
    ctx.fillText(c, 4, 4);
    var data = ctx.getImageData(0, 0, 48, 48).data, ink = 0, hash = 0;
    for (var i = 3; i < data.length; i += 4) {
      if (data[i] > 0) { ink++; }
      hash = (Math.imul(hash, 31) + data[i]) >>> 0;
    }
    return {c: c, ink: ink, hash: hash, width: ctx.measureText(c).width};
  }
  return {chars: chars, font: font, lang: (el.closest('[lang]') || {}).lang || '',
          missing: draw('\u{10FFFD}'), glyphs: chars.map(draw)};
})
"""


def cjk_font_installed() -> bool:
    """Whether fontconfig knows a Noto CJK font (``fonts-noto-cjk``)."""
    fc_list = shutil.which("fc-list")
    if not fc_list:
        return False
    listing = subprocess.run([fc_list, ":lang=zh-hk", "family"], capture_output=True, text=True, timeout=30)
    return "CJK" in listing.stdout


def cjk_verdict(measured: dict[str, Any]) -> str | None:
    """Why the measurement of :data:`_GLYPHS_JS` shows tofu (empty boxes), or ``None`` when the characters were
    drawn as real, distinct glyphs: each has ink, none has the pixels of the missing-glyph reference, and no two
    characters have the same pixels (missing glyphs are all drawn as the same box)."""
    if measured.get("error"):
        return str(measured["error"])
    glyphs = measured.get("glyphs") or []
    if not glyphs:
        return "the element's text has no Chinese character"
    missing = measured["missing"]
    blank = [g["c"] for g in glyphs if not g["ink"]]
    if blank:
        return f"no ink for {''.join(blank)!r} in {measured['font']}"
    boxes = [g["c"] for g in glyphs if g["hash"] == missing["hash"] and g["width"] == missing["width"]]
    if boxes:
        return f"{''.join(boxes)!r} drawn like a character no font has (tofu) in {measured['font']}"
    if len(glyphs) > 1 and len({g["hash"] for g in glyphs}) == 1:
        return f"{''.join(g['c'] for g in glyphs)!r} all drawn alike (tofu) in {measured['font']}"
    return None


def assert_cjk_renders(browser: DevTools, session: str, selector: str = "body") -> None:
    """Fail unless the Chinese characters of the element ``selector`` are drawn as glyphs, not as empty boxes.

    The element's characters are drawn on a canvas in its computed font (the same font fallback as the page) and
    compared with a character no font has and with each other (:func:`cjk_verdict`). Wait for the page to load
    before calling (e.g. ``browser.wait_for(session, "document.readyState === 'complete'")``).
    """
    measured = browser.evaluate(session, f"{_GLYPHS_JS}({json.dumps(selector)})")
    verdict = cjk_verdict(measured)
    if verdict:
        hint = "" if cjk_font_installed() else f" ({CJK_FONT_HINT})"
        pytest.fail(f"{selector}: Chinese does not render: {verdict}{hint}")
