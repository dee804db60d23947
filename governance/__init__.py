"""The domain: records, verdicts, governance services, the Governor SDK, metrics, drift, alerts."""
