"""The pipeline: reconcile/watch -> settle -> hash -> register. `wiring.py` connects the stages."""
