"""MkDocs hooks: the pages' generated parts, rendered from the code at every build so that they cannot drift from
it. A page names each with a marker line, `<!-- scb:NAME -->`."""

from __future__ import annotations


def generated() -> dict[str, callable]:
    """Each marker's renderer (imported when the site is built, not when MkDocs reads its config)."""
    import typer

    from speccascade_bench.cli import app
    from speccascade_bench.config.reference import config_reference
    from speccascade_bench.decoding.catalog import methods_markdown
    from speccascade_bench.finetune.config import finetune_reference
    from speccascade_bench.results.record import markdown_table
    from speccascade_bench.verbs import cli_reference

    return {"config-reference": config_reference, "finetune-reference": finetune_reference,
            "methods": methods_markdown, "row-fields": markdown_table,
            "cli": lambda: cli_reference(typer.main.get_command(app))}


def render(markdown: str) -> str:
    """A page's Markdown with each marker replaced by what it names; an unknown marker is an error."""
    renderers = None
    while "<!-- scb:" in markdown:
        start = markdown.index("<!-- scb:")
        end = markdown.index("-->", start) + 3
        name = markdown[start + len("<!-- scb:"):end - 3].strip()
        renderers = renderers or generated()
        if name not in renderers:
            raise ValueError(f"unknown generated part {name!r}; known: {', '.join(renderers)}")
        markdown = markdown[:start] + renderers[name]().rstrip() + markdown[end:]
    return markdown


def on_page_markdown(markdown: str, page, config, files) -> str:
    return render(markdown)
