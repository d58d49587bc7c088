"""Headless Chromium for the scripts that take the docs' pictures (Debian's chromium, driven by Playwright)."""

from __future__ import annotations

import shutil

FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-quic"]


def chromium_path() -> str | None:
    """Debian's Chromium, where it is installed (`make browser`)."""
    return shutil.which("chromium") or shutil.which("chromium-browser")
