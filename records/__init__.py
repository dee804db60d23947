"""The records everyone shares: decision, check, reward and rollout types, the verdict vocabulary,
Agent Lightning's event identity, the spool format, and the small parsers every layer uses
(durations, secrets, private files). Standard library only: the SDK stands on this."""
