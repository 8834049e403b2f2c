"""Command groups of ``sipas-hub``, one module per group (registered in hub/cli.py)."""
