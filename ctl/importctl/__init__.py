"""importctl: the thin client of importd."""

__version__ = "0.1.0"
