"""Open local HTML pages in a real headless browser (Debian's chromium) and report problems.

Test helper, not a test module. Playwright drives the system ``chromium`` (``executable_path``:
no browser download, never ``playwright install``), headless, without sandbox (CI runs as
root) and without network: every request that is not ``file:`` or ``data:`` is aborted and
recorded, host names resolve to nothing, background networking is off, and each page gets a
fresh browser context (Playwright's ``launch`` uses a new temporary profile each time).

    with HeadlessChromium() as browser:
        result = browser.check(Path("report.html"), Path("shot.png"))
    assert not result.errors and not result.broken_images
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

#: Where Debian's ``chromium`` package puts the browser (``CSSTFLUX_CHROMIUM`` overrides).
DEFAULT_CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-extensions",
    "--host-resolver-rules=MAP * ~NOTFOUND",  # no name resolves: no network even if asked
]
#: Images that did not load: not complete, or decoded to nothing.
_BROKEN_IMAGES_JS = """() => Array.from(document.images)
    .filter(img => !img.complete || img.naturalWidth === 0)
    .map(img => (img.getAttribute('src') || '').slice(0, 120) + ' alt=' + (img.alt || ''))"""


def chromium_executable() -> str | None:
    """Path of the chromium binary, or None when it is not installed."""
    env = os.environ.get("CSSTFLUX_CHROMIUM")
    if env:
        return env if os.access(env, os.X_OK) else None
    if os.access(DEFAULT_CHROMIUM, os.X_OK):
        return DEFAULT_CHROMIUM
    return shutil.which("chromium")


@dataclass
class PageResult:
    """What opening one page showed."""

    screenshot: Path
    """Full-page PNG screenshot."""
    errors: list[str] = field(default_factory=list)
    """Uncaught script errors, console errors and failed requests, in the order seen."""
    broken_images: list[str] = field(default_factory=list)
    """``src`` (first 120 characters) and alt text of each image that did not load."""
    blocked: list[str] = field(default_factory=list)
    """URLs of requests aborted because they would have left the machine."""


class HeadlessChromium:
    """One headless chromium for several pages (a context manager)."""

    def __init__(self, executable: str | None = None, *, width: int = 1280,
                 height: int = 900, timeout_ms: float = 30_000) -> None:
        exe = executable or chromium_executable()
        if exe is None:
            raise FileNotFoundError("chromium not found (apt-get install chromium)")
        self.executable = exe
        self.viewport = {"width": width, "height": height}
        self.timeout_ms = timeout_ms
        self._pw: Any = None
        self._browser: Any = None

    def __enter__(self) -> HeadlessChromium:
        from playwright.sync_api import sync_playwright

        self._pw = sync_playwright().start()
        try:
            self._browser = self._pw.chromium.launch(
                executable_path=self.executable, args=CHROMIUM_ARGS, headless=True,
                timeout=self.timeout_ms)
        except BaseException:
            self._pw.stop()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if self._browser is not None:
                self._browser.close()
        finally:
            self._pw.stop()

    def check(self, page_path: str | os.PathLike[str],
              screenshot: str | os.PathLike[str]) -> PageResult:
        """Open ``page_path`` (a local file), wait for it to load, screenshot it, report."""
        result = PageResult(Path(screenshot))
        context = self._browser.new_context(viewport=self.viewport, offline=True,
                                            java_script_enabled=True)
        try:
            def route(r: Any) -> None:
                url = r.request.url
                if url.startswith(("file:", "data:")):
                    r.continue_()
                else:
                    result.blocked.append(url)
                    r.abort("internetdisconnected")

            context.route("**/*", route)
            page = context.new_page()
            page.set_default_timeout(self.timeout_ms)
            page.on("pageerror", lambda e: result.errors.append(f"pageerror: {e}"))
            page.on("console", lambda m: result.errors.append(f"console.{m.type}: {m.text}")
                    if m.type == "error" else None)
            page.on("requestfailed", lambda r: result.errors.append(
                f"requestfailed: {r.url[:120]} {r.failure}"))
            page.goto(Path(page_path).resolve().as_uri(), wait_until="load")
            result.broken_images.extend(page.evaluate(_BROKEN_IMAGES_JS))
            page.screenshot(path=str(result.screenshot), full_page=True)
        finally:
            context.close()
        return result


def check_page(page_path: str | os.PathLike[str],
               screenshot: str | os.PathLike[str]) -> PageResult:
    """Open one page in a browser of its own (:meth:`HeadlessChromium.check`)."""
    with HeadlessChromium() as browser:
        return browser.check(page_path, screenshot)
