"""tractatus-watch: live governance monitoring for RL training of agents.

The base install is the light SDK of training environments (`governance`, `records`: Agent
Lightning and httpx only); everything else needs `tractatus-watch[dashboard]`. So this module
imports nothing."""

__version__ = "0.1.0"
