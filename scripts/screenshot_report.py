"""The docs' picture of the HTML report: open a report.html in headless Chromium (Debian's, driven by
Playwright, offline) and save the top of the page as a PNG.

    python scripts/screenshot_report.py [results/toy_t1/report.html] [docs/report.png]

`make demo` writes results/toy_t1/report.html first.
"""

from __future__ import annotations

import sys
from pathlib import Path

from headless import FLAGS, chromium_path


def main(page: Path, out: Path, width: int = 1400, height: int = 1250) -> None:
    from playwright.sync_api import sync_playwright

    chromium = chromium_path()
    if chromium is None:
        sys.exit("error: no Chromium (Debian: `make browser`)")
    if not page.is_file():
        sys.exit(f"error: {page} not found (`make demo` writes results/toy_t1/report.html)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=FLAGS)
        context = browser.new_context(offline=True, viewport={"width": width, "height": height},
                                      device_scale_factor=1)
        view = context.new_page()
        view.goto(page.resolve().as_uri())
        out.parent.mkdir(parents=True, exist_ok=True)
        view.screenshot(path=str(out))
        browser.close()
    print(out)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "results/toy_t1/report.html"),
         Path(sys.argv[2] if len(sys.argv) > 2 else "docs/report.png"))
