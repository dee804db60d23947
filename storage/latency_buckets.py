"""Latency buckets of the check-latency histogram (rollup_check_latency, schema v6).

Exact below 64 us; above, 32 buckets per power of two, so a bucket is at most 1/32 of its
lower bound wide and its midpoint is within 1/64 (1.6%) of every value in it. Percentiles read
from the histogram (Overhead view, per service and round: storage/queries.latency_by_service)
interpolate between bucket midpoints as `quantile_cont` does between values, so they are
within 1.6% of the exact ones, from a table whose size grows with services x rounds x buckets
used, not with checks."""

from __future__ import annotations

from typing import Final

import numpy as np

EXACT_BELOW: Final = 64
PER_OCTAVE_LOG2: Final = 5  # 32 buckets per power of two


def _octave_shift(col: str) -> str:
    return f"(floor(log2({col}))::INTEGER - {PER_OCTAVE_LOG2})"


def bucket_sql(col: str) -> str:
    """SQL: the lower bound of the bucket of latency `col` (a non-negative BIGINT)."""
    shift = _octave_shift(col)
    return (f"CASE WHEN {col} < {EXACT_BELOW} THEN {col} "
            f"ELSE ({col} >> {shift}) << {shift} END")


def midpoints(buckets: np.ndarray) -> np.ndarray:
    """The midpoint of the values of each bucket (given by its lower bound)."""
    b = np.asarray(buckets, dtype=np.int64)
    shift = np.floor(np.log2(np.maximum(b, 1))).astype(np.int64) - PER_OCTAVE_LOG2
    width = np.left_shift(np.int64(1), np.maximum(shift, 0))
    return np.where(b < EXACT_BELOW, b.astype(float), b + (width - 1) / 2.0)


def bucket(value: int) -> int:
    """The lower bound of `value`'s bucket (what bucket_sql computes), for tests."""
    if value < EXACT_BELOW:
        return value
    shift = value.bit_length() - 1 - PER_OCTAVE_LOG2
    return (value >> shift) << shift


def octave_edges(first_log2: int = 3, last_log2: int = 24) -> list[int]:
    """Upper bounds 2^k - 1 us, k = first_log2..last_log2 (7 us .. ~16.8 s): every bucket
    lies below or above each of them (buckets from 64 us split an octave [2^k, 2^(k+1)) and
    latencies are whole microseconds), so counts up to them are exact, not interpolated."""
    return [(1 << k) - 1 for k in range(first_log2, last_log2 + 1)]


def cumulative_counts(buckets: np.ndarray, counts: np.ndarray, edges: list[int]) -> list[int]:
    """Checks with latency <= each edge (an edge from `octave_edges`), from the histogram's
    buckets (lower bounds) and their counts: what a Prometheus histogram's `le` buckets hold."""
    b = np.asarray(buckets, dtype=np.int64)
    c = np.asarray(counts, dtype=np.int64)
    return [int(c[b <= edge].sum()) for edge in edges]
