"""What runs over a store: the collection session (sources, writer, alert loop, server, source
health), the alert loop and store evaluator, and the report builder."""
