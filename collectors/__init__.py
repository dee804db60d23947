"""Collectors: Agent Lightning taps, spool, Tractatus audit logs."""
