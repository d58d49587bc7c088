"""The pictures of the documentation site: build it (`mkdocs build --strict`), open its home and configuration pages
in headless Chromium (Debian's, driven by Playwright, offline) and save each as a PNG.

    python scripts/screenshot_docs.py [docs/images]

Writes site_home.png and site_configuration.png; prints the pages' headings.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from headless import FLAGS, chromium_path

PAGES = {"home": "index.html", "configuration": "configuration/index.html"}


def shoot(sync_playwright, chromium: str, site: Path, out: Path, width: int = 1400,
          height: int = 1000) -> tuple[dict[str, str], list[str]]:
    """Open each page of PAGES of a built site (offline: a request that leaves the site is refused) and save
    `site_<page>.png` into `out`; returns each page's text and the console errors."""
    texts, errors = {}, []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=FLAGS)
        context = browser.new_context(viewport={"width": width, "height": height}, device_scale_factor=1)
        root = site.resolve().as_uri()
        context.route("**/*", lambda route: route.continue_() if route.request.url.startswith(root)
                      else route.abort())
        for name, path in PAGES.items():
            page = context.new_page()
            page.on("console", lambda m: m.type == "error" and errors.append(m.text))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto((site / path).resolve().as_uri())
            page.wait_for_load_state("load")
            if name == "configuration":
                page.locator("#keys").scroll_into_view_if_needed()
            out.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out / f"site_{name}.png"))
            texts[name] = page.inner_text("body")
            page.close()
        browser.close()
    return texts, errors


def main(out: Path) -> None:
    from playwright.sync_api import sync_playwright

    chromium = chromium_path()
    if chromium is None:
        sys.exit("error: no Chromium (Debian: `make browser`)")
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as site:
        subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", site], cwd=root,
                       check=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
        texts, errors = shoot(sync_playwright, chromium, Path(site), out)
    for name, text in texts.items():
        print(name, "|", " / ".join(text.splitlines()[:3]))
    if errors:
        sys.exit(f"error: console errors: {errors}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/images"))
