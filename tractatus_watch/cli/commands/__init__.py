"""Command groups of `tractatus-watch`, one module per area."""
