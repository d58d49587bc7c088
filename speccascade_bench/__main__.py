"""`python -m speccascade_bench` is `scb`."""

from .cli import app

app(prog_name="scb")
