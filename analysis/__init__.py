"""Analysis over data handed to it: statistics, drift detectors, alert rules, the alert engine and
its notifiers. Nothing here opens a store (`monitor/` does that, above storage)."""
