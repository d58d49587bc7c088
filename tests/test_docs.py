"""The docs cannot drift: the README's quick start is a config that validates, the configuration reference lists
every key with a description, the CLI reference is `scb --help`'s, every generated part renders, and the site builds
with --strict and shows its pages in a real browser."""

import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from speccascade_bench.cli import app
from speccascade_bench.config.reference import RUN_SECTIONS, config_reference, section_keys, undocumented
from speccascade_bench.settings import option

from .helpers import docs_hooks

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_the_readme_is_short_and_its_quick_start_config_validates(tmp_path, monkeypatch):
    assert len(README.splitlines()) <= 200
    section = README[README.index("## Your pair on your task in three commands"):]
    block = section[section.index("```yaml\n") + 8:section.index("```", section.index("```yaml\n") + 8)]
    assert len(block.strip().splitlines()) <= 15
    config = yaml.safe_load(block)
    assert "/" in config["models"]["drafter"] and config["task"]["dataset"].endswith(".jsonl")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "my_task.jsonl").write_text('{"question": "2 + 2?", "answer": "4"}\n')
    (tmp_path / "my_pair.yaml").write_text(block)
    result = CliRunner().invoke(app, ["validate", "--config", "my_pair.yaml"])
    assert result.exit_code == 0, result.output
    for command in re.findall(r"^(scb [a-z-]+)", section, re.M):
        assert command.split()[1] in {c.split()[1] for c in re.findall(r"\| `(scb [a-z-]+)", README)}


def test_every_config_key_is_in_the_generated_reference_with_a_description():
    from speccascade_bench.finetune.config import SECTIONS, finetune_reference

    assert undocumented() == [] and undocumented(SECTIONS) == []
    tuning = finetune_reference()
    for prefix, cls, flat in SECTIONS:
        for f in section_keys(cls, flat):
            assert f"| `{prefix + '.' if prefix else ''}{f.name}` |" in tuning, (prefix, f.name)
    text = config_reference()
    for prefix, cls in RUN_SECTIONS:
        for f in section_keys(cls):
            assert f"| `{prefix + '.' if prefix else ''}{f.name}` |" in text, (prefix, f.name)
    assert "| `task.split` | `test` |" in text and "| `name` | **required** |" in text
    assert "| `decoding.temperature` | `0` | [0, 100] |" in text


def test_a_key_without_a_description_is_found():
    from speccascade_bench.config import reference

    @dataclass(frozen=True)
    class Extended:
        documented: int = option(1, doc="a key with a description")
        new_key: int = option(2)
        hidden: str = field(default="", metadata={"internal": True})

    assert [f.name for f in fields(Extended) if not f.metadata.get("doc") and not f.metadata.get("internal")] == \
        ["new_key"]
    original = reference.RUN_SECTIONS
    try:
        reference.RUN_SECTIONS = (*original, ("extended", Extended))
        assert reference.undocumented() == ["extended.new_key"]
    finally:
        reference.RUN_SECTIONS = original


def _options(text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", text))


def test_the_cli_reference_is_scb_help():
    import typer

    from speccascade_bench.verbs import cli_reference

    reference = cli_reference(typer.main.get_command(app))
    runner = CliRunner()
    top = runner.invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert top.exit_code == 0
    commands = [name for name in re.findall(r"^[│ ]\s+([a-z][a-z-]+)\s{2,}", top.output, re.M)]
    documented = re.findall(r"^## scb ([a-z-]+)$", reference, re.M)
    assert documented == commands, (documented, commands)
    for name in commands:
        shown = runner.invoke(app, [name, "--help"], env={"COLUMNS": "200"})
        assert shown.exit_code == 0
        part = reference[reference.index(f"## scb {name}\n"):]
        part = part[:part.index("\n## scb ", 1)] if "\n## scb " in part[1:] else part
        assert _options(shown.output) == _options(part), name


def test_every_generated_part_renders_and_an_unknown_one_is_refused():
    hooks = docs_hooks()
    pages = {path.name: path.read_text() for path in (ROOT / "docs").glob("*.md")}
    markers = {name: re.findall(r"<!-- scb:([a-z-]+) -->", text) for name, text in pages.items()}
    assert {name for name, found in markers.items() if found} == {"configuration.md", "methods.md", "cli.md",
                                                                  "results.md"}
    for name, text in pages.items():
        assert "<!-- scb:" not in hooks.render(text), name
    methods = hooks.render(pages["methods.md"])
    from speccascade_bench.decoding.deferral import RULES
    from speccascade_bench.decoding.methods import METHODS

    for name in (*METHODS, *RULES):
        assert f"`{name}`" in methods, name
    with pytest.raises(ValueError, match="unknown generated part 'nothing'"):
        hooks.render("<!-- scb:nothing -->")


def test_the_site_builds_strict_and_renders_in_a_browser(tmp_path):
    """`mkdocs build --strict` (as `make docs` in CI), then the home and configuration pages in headless Chromium:
    their headings, the generated table, and no console error."""
    pytest.importorskip("mkdocs")
    site = tmp_path / "site"
    build = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", str(site)],
                           cwd=ROOT, capture_output=True, text=True, env={"NO_MKDOCS_2_WARNING": "1",
                                                                          "PATH": "/usr/bin:/bin"})
    assert build.returncode == 0, build.stderr[-3000:]
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text().split("exclude_docs")[0])["nav"]
    for entry in nav:
        page = next(iter(entry.values()))
        built = site / ("index.html" if page == "index.md" else page.removesuffix(".md") + "/index.html")
        assert built.is_file(), page
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no Chromium: `apt-get install chromium` (Debian) runs the browser tests")
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from screenshot_docs import shoot
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    texts, errors = shoot(sync_playwright, chromium, site, tmp_path)
    assert "Where to go" in texts["home"] and "Getting started" in texts["home"]
    assert "task.dataset" in texts["configuration"] and "required" in texts["configuration"]
    assert "decoding.temperature" in texts["configuration"]
    assert errors == []
    assert (tmp_path / "site_home.png").stat().st_size > 10_000
