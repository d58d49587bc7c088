"""speccascade-bench: quality against latency for cascades, speculative decoding and speculative cascades."""

__version__ = "0.1.0"
