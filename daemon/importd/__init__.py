"""importd: catalog legacy media trees in place."""

__version__ = "0.1.0"
