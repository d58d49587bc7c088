"""`scb report --html`: one self-contained page. Its content and escaping are checked on the text; a headless
Chromium (Debian's package, driven by Playwright) opens the page with the network blocked and checks that it
renders, sorts, hides curves and runs nothing planted in a results folder."""

import os
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from speccascade_bench.analysis.html import HTML_FILE, SCRIPT, build_html, write_html
from speccascade_bench.cli import app
from speccascade_bench.files import ResultsError

from .results_builder import build_results
from .test_figures import RUNS

HOSTILE_RUN = "spec_decode-g5<img src=x onerror=window.pwned=1>"
HOSTILE_OUTPUT = "<script>window.pwned=2</script>"
HOSTILE_NAME = "<script>window.pwned=3</script>"
DEMO_LIMIT = 10  # examples of the demo's config decoded for the browser test (the bootstrap needs 10)


def hostile_runs() -> dict:
    runs = dict(RUNS)
    runs[HOSTILE_RUN] = runs.pop("spec_decode-g5")
    return runs


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("pages")
    hostile = build_results(root / "a<b>\"c" / "task", hostile_runs(), name=HOSTILE_NAME,
                            predictions={"drafter": HOSTILE_OUTPUT})
    plain = build_results(root / "plain" / "task", RUNS, name="plain")
    return hostile, plain


def test_the_page_holds_everything_and_escapes_every_text(folders, tmp_path):
    hostile, plain = folders
    page = write_html([hostile, plain], tmp_path / "out")
    assert page == tmp_path / "out" / HTML_FILE
    text = page.read_text()
    for planted in (HOSTILE_RUN, HOSTILE_OUTPUT, HOSTILE_NAME, "a<b>\"c"):
        assert planted not in text
    assert "&lt;img src=x onerror=window.pwned=1&gt;" in text and "&lt;script&gt;window.pwned=2" in text
    assert text.count("<script") == 1 and "<img" not in text  # the page's own script, no image element
    assert not re.search(r"(src|href)=\"(https?:)?//", text)  # nothing from elsewhere
    # its script runs under the page's policy, by hash
    assert "script-src 'sha256-" in text and SCRIPT in text
    assert text.count("<svg") == 4  # two figures per folder
    assert text.count('table class="sortable summary"') == 2 and text.count('table class="sortable tradeoff"') == 2
    # a box per curve over both folders: verifier, drafter, spec_decode, lossy_spec_decode beta=1, spec_cascade opt
    assert text.count('data-curve="') == 5
    # links to the example files, relative to the page, that lead to them
    links = re.findall(r'<a href="([^"]+)"', text)
    assert any(link.endswith("drafter.jsonl") for link in links)
    for link in links:
        from urllib.parse import unquote

        assert (page.parent / unquote(link.replace("&amp;", "&").replace("&quot;", '"'))).is_file(), link
    assert "built: data/built.jsonl" not in text and "plain: data/built.jsonl (exact_match)" in text


def test_the_page_goes_where_it_is_told_and_never_over_what_it_did_not_write(folders, tmp_path):
    hostile, plain = folders
    assert write_html([plain]) == plain / HTML_FILE
    target = tmp_path / "elsewhere.html"
    target.write_text("keep")
    out = tmp_path / "linked"
    out.mkdir()
    (out / HTML_FILE).symlink_to(target)
    with pytest.raises(ResultsError, match="link"):
        write_html([plain], out)
    assert target.read_text() == "keep"
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / HTML_FILE).write_text("<html>someone's page</html>")
    with pytest.raises(ResultsError, match="not written by"):
        write_html([plain], theirs)
    assert (theirs / HTML_FILE).read_text() == "<html>someone's page</html>"
    assert write_html([plain], theirs / "new") == theirs / "new" / HTML_FILE
    assert write_html([plain], theirs / "new") == theirs / "new" / HTML_FILE  # its own page it replaces
    afile = tmp_path / "a_file"
    afile.write_text("")
    with pytest.raises(ResultsError, match="not a folder"):
        write_html([plain], afile)
    result = CliRunner().invoke(app, ["report", str(plain), "--out", str(tmp_path)])
    assert result.exit_code == 2 and "--html" in result.output
    result = CliRunner().invoke(app, ["report", str(plain), str(hostile), "--html", "--out", str(tmp_path / "both")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "both" / HTML_FILE).is_file() and result.output.count("| run |") == 2
    assert (plain / "report.md").is_file() and (hostile / "report.md").is_file()  # the Markdown reports stay


def test_a_folder_it_cannot_write_is_one_line(folders, tmp_path, monkeypatch):
    from speccascade_bench.analysis import html

    def read_only(path, data, sync=False):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(html, "write_file", read_only)
    _, plain = folders
    result = CliRunner().invoke(app, ["report", str(plain), "--html", "--out", str(tmp_path / "archive")])
    assert result.exit_code == 2 and "report.html not written" in result.output and "--out" in result.output
    assert "Traceback" not in result.output and "| run |" in result.output  # the Markdown report still printed


def test_findings_appear_for_a_recorded_toy_config_only(folders, tmp_path):
    import json

    _, plain = folders
    copy = tmp_path / "toy"
    shutil.copytree(plain, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["config"].update(name="toy_t1", file="configs/toy_t1.yaml")
    (copy / "manifest.json").write_text(json.dumps(manifest))
    text = build_html([copy], copy / HTML_FILE)
    assert "The paper's findings on this config" in text and "Lossless speculative decoding keeps" in text
    assert "The paper's findings" not in build_html([plain], plain / HTML_FILE)


def browser():
    """Playwright's sync API and Debian's Chromium, or a skip naming what is missing."""
    path = os.environ.get("SCB_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("no Chromium: `apt-get install chromium` (Debian) runs the browser tests")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("no Playwright: `pip install -e .[dev]` installs it")
    return sync_playwright, path


FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-quic"]


class Opened:
    """A page opened offline in headless Chromium, with its console errors and every request it tried."""

    def __init__(self, playwright, chromium: str, page: Path):
        self.browser = playwright.chromium.launch(executable_path=chromium, args=FLAGS)
        context = self.browser.new_context(offline=True, viewport={"width": 1400, "height": 1000})
        self.requests, self.errors = [], []
        url = page.resolve().as_uri()

        def route(request_route):
            if request_route.request.url == url:
                request_route.continue_()
            else:
                self.requests.append(request_route.request.url)
                request_route.abort()

        context.route("**/*", route)
        self.page = context.new_page()
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: r.url != url and self.requests.append(r.url))
        self.page.goto(url)
        self.page.wait_for_load_state("load")

    def column(self, table: str, index: int) -> list[str]:
        return self.page.eval_on_selector_all(f"{table} tbody tr",
                                              f"rows => rows.map(r => r.cells[{index}].textContent)")


@pytest.fixture(scope="module")
def demo_page(tmp_path_factory):
    """`make demo`'s config (configs/toy_t1.yaml) on DEMO_LIMIT examples of a toy test split generated here."""
    import yaml

    root = tmp_path_factory.mktemp("demo")
    result = CliRunner().invoke(app, ["toy-data", "--out", str(root / "data"), "--train", "1", "--validation", "1",
                                      "--test", str(DEMO_LIMIT)])
    assert result.exit_code == 0, result.output
    config = yaml.safe_load(open("configs/toy_t1.yaml"))
    config["task"]["dataset"] = str(root / "data" / "test.jsonl")
    config["output"] = str(root / "toy_t1")
    config["timing"]["warmup"] = 0  # the page shows no warm-up; the config's 2 would decode 80 examples more
    config["decoding"]["max_new_tokens"] = 12  # what the page draws and sorts needs no whole outputs (about 30)
    (root / "toy_t1.yaml").write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(app, ["run", "-c", str(root / "toy_t1.yaml"), "--limit", str(DEMO_LIMIT)])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(app, ["report", str(root / "toy_t1"), "--html"])
    assert result.exit_code == 0, result.output
    return root / "toy_t1" / HTML_FILE


def test_the_demos_page_renders_sorts_and_hides_curves_offline(demo_page):
    sync_playwright, chromium = browser()
    with sync_playwright() as playwright:
        opened = Opened(playwright, chromium, demo_page)
        page = opened.page
        figures = page.locator("figure svg")
        assert figures.count() == 2
        for i in range(2):
            box = figures.nth(i).bounding_box()
            assert box["width"] > 600 and box["height"] > 200
        # sorting: relative latency up, then down; the run column follows
        headers = page.eval_on_selector_all("table.summary th", "ths => ths.map(t => t.textContent)")
        column = headers.index("rel. latency")
        page.locator("table.summary th").nth(column).click()
        ascending = [float(v) for v in opened.column("table.summary", column)]
        assert ascending == sorted(ascending) and len(ascending) > 20
        page.locator("table.summary th").nth(column).click()
        assert [float(v) for v in opened.column("table.summary", column)] == sorted(ascending, reverse=True)
        page.locator("table.summary th").nth(0).click()
        runs = opened.column("table.summary", 0)
        assert runs == sorted(runs, key=str.lower) or runs == sorted(runs)
        # hiding a curve hides its line, bars and points in both figures and nothing else
        label = page.locator("div.curves label", has_text="spec_cascade opt").first
        box = label.locator("input")
        k = box.get_attribute("data-curve")
        before = page.locator("figure").first.screenshot()
        shown = f'[id^="scb-curve-{k}-"]'
        assert page.locator(shown).count() >= 12  # line, caps and bars in 2 panels of 2 figures
        box.uncheck()
        hidden = page.eval_on_selector_all(shown, "gs => gs.map(g => getComputedStyle(g).display)")
        assert set(hidden) == {"none"}
        others = page.eval_on_selector_all('[id^="scb-curve-"]', "gs => gs.filter(g => getComputedStyle(g).display "
                                           "!== 'none').length")
        assert others > 0
        assert page.locator("figure").first.screenshot() != before
        box.check()
        shown_again = page.eval_on_selector_all(shown, "gs => gs.map(g => getComputedStyle(g).display)")
        assert "none" not in shown_again
        assert opened.errors == [] and opened.requests == []
        opened.browser.close()


def test_planted_strings_stay_text_in_the_browser(folders, tmp_path):
    sync_playwright, chromium = browser()
    hostile, _ = folders
    page_path = write_html([hostile], tmp_path)
    with sync_playwright() as playwright:
        opened = Opened(playwright, chromium, page_path)
        page = opened.page
        page.locator("details").first.click()  # unfold the first example's outputs
        assert page.evaluate("typeof window.pwned") == "undefined"
        assert page.locator("img").count() == 0 and page.locator("script").count() == 1
        text = page.inner_text("body")
        for planted in (HOSTILE_RUN, HOSTILE_OUTPUT, HOSTILE_NAME):
            assert planted in text
        assert opened.errors == [] and opened.requests == []
        opened.browser.close()


def test_the_page_shows_no_path_of_this_machine_unless_asked(tmp_path, monkeypatch):
    """A page made to be sent: the folder, the models and the data as paths relative to the results folder or with
    the home folder as ~; --absolute-paths shows them as recorded."""
    import json

    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    folder = build_results(home / "runs" / "task", RUNS, name="paths")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["config"]["models"] = {"drafter": str(home / "models" / "small"),
                                    "verifier": str(tmp_path / "srv" / "large")}
    manifest["config"]["task"]["dataset"] = str(folder / "data" / "test.jsonl")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert CliRunner().invoke(app, ["report", str(folder), "--html"]).exit_code == 0
    text = (folder / HTML_FILE).read_text()
    assert str(tmp_path) not in text
    for shown in ("<small>~/runs/task</small>", "drafter <code>~/models/small</code>",
                  "verifier <code>.../srv/large</code>", "data/test.jsonl (exact_match)",
                  ">examples/drafter.jsonl</a>"):
        assert shown in text, shown
    assert CliRunner().invoke(app, ["report", str(folder), "--html", "--absolute-paths"]).exit_code == 0
    text = (folder / HTML_FILE).read_text()
    for recorded in (f"<small>{folder}</small>", str(home / "models" / "small"), str(folder / "data" / "test.jsonl")):
        assert recorded in text, recorded


def test_plot_never_writes_over_figures_it_did_not_write(folders, tmp_path):
    _, plain = folders
    theirs = tmp_path / "figures"
    theirs.mkdir()
    (theirs / "quality_latency.png").write_bytes(b"someone's figure")
    result = CliRunner().invoke(app, ["plot", str(plain), "--out", str(theirs)])
    assert result.exit_code == 2 and "not written by `scb plot`" in result.output
    assert "quality_latency.png" in result.output
    assert (theirs / "quality_latency.png").read_bytes() == b"someone's figure"
    assert sorted(p.name for p in theirs.iterdir()) == ["quality_latency.png"]  # nothing else written either
    mine = tmp_path / "mine"
    for _ in range(2):  # its own figures it replaces
        result = CliRunner().invoke(app, ["plot", str(plain), "--out", str(mine)])
        assert result.exit_code == 0, result.output
    assert {p.name for p in mine.iterdir()} == {f"{name}{suffix}" for name in ("quality_latency", "quality_cost")
                                                for suffix in (".png", ".pdf")}
    assert all(b"speccascade-bench scb plot" in path.read_bytes() for path in mine.iterdir())
    result = CliRunner().invoke(app, ["plot", str(plain)])  # into the results folder, the suite's own
    assert result.exit_code == 0, result.output
    other = tmp_path / "web"  # a folder with a manifest.json of something else is no results folder
    for name in ("x", "y"):
        shutil.copytree(plain, other / name)
    (other / "manifest.json").write_text('{"name": "my web app"}')
    (other / "combined_quality_latency.png").write_bytes(b"precious")
    result = CliRunner().invoke(app, ["plot", str(other / "x"), str(other / "y")])
    assert result.exit_code == 2 and "not written by `scb plot`" in result.output
    assert (other / "combined_quality_latency.png").read_bytes() == b"precious"
