"""Collectors: everything that brings data in (Agent Lightning taps, spool reader, Tractatus
audit logs) and hands normalised records to a sink."""
