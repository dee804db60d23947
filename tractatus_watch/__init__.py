"""tractatus-watch: live governance monitoring for RL training of agents."""

__version__ = "0.1.0"
