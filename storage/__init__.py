"""DuckDB storage: schema, the single writer, rollups, queries, exports."""
