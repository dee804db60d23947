"""The bridge options of `collect`, `gateway`, `live` and `demo` (monitor/bridges.py): each
bridge is off unless asked for, and needs its extra installed."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from .config import CliError

if TYPE_CHECKING:
    from ..analysis.alerts.alert_rules import AlertRuleSet
    from ..monitor.bridges import Bridge

MetricsOption = Annotated[Optional[str], typer.Option(
    "--metrics", metavar="[HOST:]PORT",
    help="Serve Prometheus metrics on http://HOST:PORT/metrics (host 127.0.0.1 unless given). "
         "Needs tractatus-watch[prometheus].")]
TensorBoardOption = Annotated[Optional[Path], typer.Option(
    "--tensorboard", metavar="DIR", file_okay=False,
    help="Write per-round governance scalars as TensorBoard event files under DIR, keyed by "
         "the training step (round). Needs tractatus-watch[tensorboard].")]
WandbOption = Annotated[Optional[str], typer.Option(
    "--wandb", metavar="PROJECT",
    help="Log per-round governance scalars to this W&B project, keyed by the training step "
         "(WANDB_MODE=offline works without network). Needs tractatus-watch[wandb].")]
OtlpOption = Annotated[Optional[str], typer.Option(
    "--otlp", metavar="URL",
    help="Send each decision as an OpenTelemetry span (its checks as child spans) over OTLP "
         "HTTP to URL, e.g. http://127.0.0.1:4318/v1/traces. Needs tractatus-watch[otel].")]


@dataclass(frozen=True)
class BridgeOptions:
    metrics: str | None = None
    tensorboard: Path | None = None
    wandb: str | None = None
    otlp: str | None = None


def parse_address(text: str, option: str = "--metrics") -> tuple[str, int]:
    """[HOST:]PORT, host 127.0.0.1 unless given."""
    host, _, port = text.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise CliError(f"{option}: expected [HOST:]PORT with a port 1-65535, got {text!r}")
    return host, int(port)


def _need(module: str, extra: str, option: str) -> None:
    try:
        found = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a dotted name whose parent package is missing
        found = False
    if not found:
        raise CliError(f"{option} needs the {extra} extra: pip install "
                       f"'tractatus-watch[{extra}]'")


def make_bridges(opts: BridgeOptions, rules: AlertRuleSet | None = None) -> list[Bridge]:
    """The bridges asked for, each checked before the store is opened (a bad option is a
    one-line error, exit 2). `rules`: the collector's alert rules (default: the shipped ones),
    whose detectors the Prometheus bridge exports."""
    bridges: list[Bridge] = []
    if opts.metrics is not None:
        host, port = parse_address(opts.metrics)
        _need("prometheus_client", "prometheus", "--metrics")
        from ..monitor.prometheus_bridge import PrometheusBridge

        try:
            bridges.append(PrometheusBridge(host, port, rules=rules))
        except OSError as exc:  # port in use, unknown host: before anything is collected
            raise CliError(f"--metrics {opts.metrics}: cannot listen on {host}:{port}: "
                           f"{exc.strerror or exc}") from None
    if opts.tensorboard is not None:
        _need("tensorboardX", "tensorboard", "--tensorboard")
        from ..monitor.tracker_bridge import TensorBoardBridge

        bridges.append(TensorBoardBridge(opts.tensorboard))
    if opts.wandb is not None:
        _need("wandb", "wandb", "--wandb")
        from ..monitor.tracker_bridge import WandbBridge

        bridges.append(WandbBridge(opts.wandb))
    if opts.otlp is not None:
        _need("opentelemetry.proto", "otel", "--otlp")
        from ..monitor.otel_bridge import OtelBridge

        bridges.append(OtelBridge(opts.otlp))
    return bridges
