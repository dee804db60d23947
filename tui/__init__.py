"""The Textual dashboard (`tractatus-watch open`, `live`, `demo`)."""

from .app import Dashboard, SilenceWriter, run_dashboard
from ..monitor.health import HealthProvider, SourceHealth, SourceMonitor
from .scope import Scope

__all__ = ["Dashboard", "HealthProvider", "Scope", "SilenceWriter", "SourceHealth",
           "SourceMonitor", "run_dashboard"]
