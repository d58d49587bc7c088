"""docs/ALGORITHMS.md, the account of every method that decoding/rules.py and the docs cite, covers the registry:
every method, rule and parameter, with the ranges `scb methods` enforces."""

from pathlib import Path

from speccascade_bench.decoding.methods import METHODS, RULE_ALPHA_RANGE

DOC = (Path(__file__).parent.parent / "docs" / "ALGORITHMS.md").read_text(encoding="utf-8")


def test_every_method_parameter_and_rule_is_described():
    for spec in METHODS.values():
        assert f"`{spec.name}`" in DOC, spec.name
        for param in spec.params:
            assert f"`{param.name}`" in DOC, (spec.name, param.name)
            for choice in param.choices:
                assert f"`{choice}`" in DOC, (spec.name, param.name, choice)
    for rule in RULE_ALPHA_RANGE:
        assert f"`{rule}`" in DOC, rule


def test_the_package_cites_the_document_in_the_repository():
    root = Path(__file__).parent.parent
    for path in (root / "speccascade_bench").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        if "ALGORITHMS.md" in text:
            assert "docs/ALGORITHMS.md" in text, path.name
