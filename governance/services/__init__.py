"""Tractatus-style governance services."""
