"""Self-supervised learning with matrix information theory (Matrix-SSL, ICML 2024)."""

__version__ = "0.1.0"
