"""The docs' picture of a results folder in the MLflow UI: send the folder to a new local MLflow store
(`scb report --log`), start `mlflow server` on loopback over that store, open the folder's experiment in headless
Chromium (Debian's, driven by Playwright), expand the folder's run to show its method runs, and save a PNG.

    python scripts/mlflow_ui.py [results/toy_t1] [docs/images/mlflow_ui.png]

`make demo` writes results/toy_t1 first. Prints the run names the page showed.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from headless import FLAGS, chromium_path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def mlflow_server(uri: str, artifacts: Path, wait_s: float = 90.0):
    """`mlflow server` over the store `uri` on a free loopback port; yields its address once it answers."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
                               "--default-artifact-root", str(artifacts), "--host", "127.0.0.1", "--port", str(port),
                               "--workers", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not start: {server.stderr.read().decode()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()


def log_folder(folder: Path, uri: str) -> dict:
    """Send a results folder to the store (as `scb report FOLDER --log mlflow=URI` does); returns where it went."""
    from speccascade_bench.analysis.trackers import Trackers
    from speccascade_bench.analysis.tracking import Target

    trackers = Trackers((Target("mlflow", uri),))
    sent = trackers.send(folder)
    trackers.close()
    if "mlflow" not in sent:
        raise RuntimeError(f"{folder} was not sent to {uri}")
    return sent["mlflow"]


SHOWN_METRICS = ("quality", "quality_vs_verifier", "relative_latency", "relative_latency_median", "speedup",
                 "acceptance_rate", "deferral_rate")


def screenshot(url: str, experiment_id: str, folder_name: str, out: Path, width: int = 1900,
               height: int = 820) -> str:
    """Open the experiment's runs, expand the folder's run, show the main metrics as columns, save the PNG; returns
    the page's text."""
    from playwright.sync_api import sync_playwright

    chromium = chromium_path()
    if chromium is None:
        raise RuntimeError("no Chromium (Debian: `make browser`)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=FLAGS)
        page = browser.new_page(viewport={"width": width, "height": height}, device_scale_factor=1)
        page.goto(f"{url}/#/experiments/{experiment_id}/runs")
        page.locator(f'text="{folder_name}" >> visible=true').first.wait_for(timeout=60000)
        with contextlib.suppress(Exception):  # the assistant's panel and the sidebar, where this version has them
            page.get_by_role("button", name="Close").first.click(timeout=3000)
            page.get_by_role("button", name="Toggle sidebar").first.click(timeout=3000)
        row = page.locator("[role=row]", has=page.locator(f'text="{folder_name}" >> visible=true')).first
        row.locator("button").first.click(timeout=10000)  # the folder's run expanded: its method runs below it
        page.get_by_test_id("column-selection-dropdown").first.click(timeout=10000)
        for name in SHOWN_METRICS:
            items = page.get_by_text(name, exact=True)
            if items.count():
                items.first.click()
        page.keyboard.press("Escape")
        page.wait_for_timeout(1500)
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out))
        text = page.inner_text("body")
        browser.close()
    return text


def main(folder: Path, out: Path) -> list[str]:
    if not (folder / "summary.csv").is_file():
        sys.exit(f"error: {folder} has no summary.csv (`make demo` writes results/toy_t1)")
    runs = [line.split(",")[0] for line in (folder / "summary.csv").read_text().splitlines()[1:]]
    with tempfile.TemporaryDirectory() as store:
        uri = f"sqlite:///{Path(store) / 'mlflow.db'}"
        where = log_folder(folder, uri)
        with mlflow_server(uri, Path(store) / "artifacts") as url:
            text = screenshot(url, where["experiment_id"], folder.name, out)
    shown = [name for name in [folder.name, *runs] if name in text]
    print(json.dumps({"screenshot": str(out), "shown": shown, "not_shown": [r for r in runs if r not in shown]}))
    return shown


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "results/toy_t1"),
         Path(sys.argv[2] if len(sys.argv) > 2 else "docs/images/mlflow_ui.png"))
