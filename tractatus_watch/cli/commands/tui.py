"""Dashboard commands: open (a stored database, read-only) and live (collect and watch)."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Annotated, Any, Optional

import typer

from ..app import (DataPathOption, DbOption, ExperimentOption, TokenFileOption, app,
                   experiment_meta, open_store, pick_run)
from ..config import CliError, default_db_path, resolve_store
from ..bridge_options import (BridgeOptions, MetricsOption, OtlpOption, TensorBoardOption,
                              WandbOption, make_bridges)
from .collect import ServeOption, ServePublicOption, ServeTimeoutOption, ServeTokenFileOption

RunOption = Annotated[Optional[str], typer.Option(
    "--run", help="Run to show [default: the latest, following new runs].")]
BaselineOption = Annotated[Optional[str], typer.Option(
    "--baseline", help="Run whose ungoverned arm is the baseline [default: the same run].")]
IntervalOption = Annotated[Optional[float], typer.Option(
    "--interval", min=0.1, max=3600, help="Seconds between refreshes [default: 1 live, 5 open].")]
ViewOption = Annotated[str, typer.Option(
    "--view", help="View to start on: overview, rules, alerts, runs, agents, overhead, events "
                   "(or its number).")]

ALERT_EVERY_S = 5.0


@app.command("open")
def open_(db: DbOption = None, data_path: DataPathOption = None, run: RunOption = None,
          baseline: BaselineOption = None,
          interval: IntervalOption = None, view: ViewOption = "overview",
          remote: Annotated[Optional[str], typer.Option(
              "--remote", metavar="quack:HOST:PORT",
              help="Watch a collector started with --serve (the same as --store "
                   "quack:HOST:PORT; takes precedence over --store).")] = None,
          token_file: TokenFileOption = None) -> None:
    """Browse a stored database read-only: runs, rules, alerts, agents, overhead, events.

    With --remote, watch a running collector's database live, served over Quack."""
    from ...storage.errors import StoreLocked
    from ...tui import run_dashboard

    _check_view(view)
    if remote is not None:
        if data_path:
            raise CliError("--data-path is for a ducklake: store, not --remote")
        spec = remote.strip()
        db = spec if spec.startswith("quack:") else f"quack:{spec}"
    try:
        store = open_store(db, data_path, read_only=True, token_file=token_file)
    except StoreLocked as exc:
        raise StoreLocked(f"{exc}; to watch a training while it is collected, run the "
                          "dashboard in the collecting process: `tractatus-watch live`") from None
    with store:
        con = store.cursor()
        try:
            run_id = pick_run(con, run) if run else None
            baseline_run = pick_run(con, baseline) if baseline else None
        finally:
            con.close()
        short = store.target.short
        empty = (f"no data in {short} yet. To collect, run `tractatus-watch live --gateway` "
                 "and point the trainer at it (or `live --spool DIR`, `live --agl URL`, "
                 f"`collect ...` into this database); or try `tractatus-watch demo`.")
        run_dashboard(store, run_id=run_id, baseline_run=baseline_run, interval=interval,
                      title=f"tractatus-watch · {short}", view=view, empty_state=empty)


@app.command()
def live(
    agl: Annotated[Optional[str], typer.Option(
        "--agl", metavar="URL", help="Poll a running Agent Lightning gateway (read-only).")]
    = None,
    spool: Annotated[Optional[Path], typer.Option(
        "--spool", metavar="DIR", file_okay=False,
        help="Follow a spool folder (written by the RolloutHooks file or the Governor).")] = None,
    gateway: Annotated[bool, typer.Option(
        "--gateway", help="Run the Agent Lightning gateway here and tee every event.")] = False,
    host: Annotated[str, typer.Option("--host", help="Gateway address (--gateway).")]
    = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Gateway port (--gateway).")] = 8080,
    key_file: Annotated[Optional[Path], typer.Option(
        "--key-file", dir_okay=False, help="File holding the gateway key [default: $AGL_KEY].")]
    = None,
    run: Annotated[Optional[str], typer.Option(
        "--run", help="Run id given to records that carry none.")] = None,
    interval: IntervalOption = None,
    view: ViewOption = "overview",
    no_alerts: Annotated[bool, typer.Option(
        "--no-alerts", help="Do not evaluate the alert rules while collecting.")] = False,
    serve: ServeOption = None, serve_public: ServePublicOption = False,
    token_file: ServeTokenFileOption = None, serve_timeout: ServeTimeoutOption = None,
    experiment: ExperimentOption = None,
    metrics: MetricsOption = None, tensorboard: TensorBoardOption = None,
    wandb: WandbOption = None, otlp: OtlpOption = None,
    db: DbOption = None, data_path: DataPathOption = None,
) -> None:
    """Collect from the given sources and watch them in one process.

    DuckDB allows one process per database file, so collecting and watching share it: the
    dashboard reads through the writer's own store. Quitting the dashboard stops collecting."""
    from ...collectors.runner import KeyFileError, load_key
    from ...tui import run_dashboard
    from ...analysis.alerts.alert_rules import load_default_alert_rules
    from ...monitor.session import CollectionSession
    from .collect import serve_plan

    if not (agl or spool or gateway):
        raise CliError("live needs at least one source: --agl URL, --spool DIR or --gateway")
    _check_view(view)
    meta = experiment_meta(experiment)
    target = resolve_store(db, data_path)
    plan = serve_plan(serve, serve_public, token_file, target, timeout_s=serve_timeout)
    bridges = make_bridges(BridgeOptions(metrics, tensorboard, wandb, otlp))
    try:
        key = load_key(key_file)
    except KeyFileError as exc:
        raise CliError(str(exc)) from None
    sources: list[Any] = []
    if agl:
        from ...collectors.poller import Poller

        sources.append(Poller(agl, key=key, run_id=run or ""))
    if spool:
        from ...collectors.spool_reader import SpoolReader

        sources.append(SpoolReader(spool))
    if gateway:
        from ...collectors.gateway_tap import GatewayTap
        from ...collectors.gateway_wal import wal_folder

        # The runner hands the tap its sink when it starts it.
        sources.append(GatewayTap(lambda _records: None, host=host, port=port, key=key,
                                  run_id=run or "", wal_dir=wal_folder(target, host, port)))
    store = open_store(target, read_only=False)
    with logs_to_file(store.path or default_db_path(), "live") as log_path:
        session = CollectionSession(
            store, sources, run_id=run or "default",
            alert_rules=None if no_alerts else load_default_alert_rules(),
            alert_interval_s=ALERT_EVERY_S, serve=plan, run_meta=meta, bridges=bridges)
        alert_store = session.alerts.alert_store if session.alerts is not None else None
        try:
            session.start()
            reroute_stream_handlers()
            run_dashboard(store, run_id=run, live_writer=session.writer,
                          source_health=session.health, silence_writer=session.silence_writer,
                          silence_expirer=alert_store.expire_silence if alert_store else None,
                          interval=interval, title="tractatus-watch live", view=view,
                          empty_state=waiting_for(sources), log_prints=True)
        finally:
            try:
                session.close()
            finally:
                store.close()
    for name, error in session.errors.items():
        typer.echo(f"error: source {name}: {error}", err=True)
    typer.echo(f"collector log: {log_path}", err=True)
    if session.errors:
        raise typer.Exit(1)


def _check_view(view: str) -> None:
    from ...tui.app import view_index

    try:
        view_index(view)
    except ValueError as exc:
        raise CliError(f"--view: {exc}") from None


def waiting_for(sources: Sequence[Any]) -> Callable[[], str]:
    """What the empty dashboard says in `live`: where the data will come from."""
    from ...collectors.gateway_tap import GatewayTap
    from ...collectors.poller import Poller
    from ...collectors.spool_reader import SpoolReader

    def one(source: Any) -> str:
        if isinstance(source, GatewayTap):
            where = f"{source.host}:{source.port}"
            if not source.listening.is_set():
                return f"starting the gateway on {where} …"
            return (f"gateway listening on {where}, point the trainer here "
                    f"(AGL_SERVER_URL={source.url} / agl-server URL)")
        if isinstance(source, Poller):
            return f"polling {source.url}: waiting for the first rollout"
        if isinstance(source, SpoolReader):
            return f"watching {source.folder}: waiting for the first spool file"
        return f"waiting for {getattr(source, 'source', type(source).__name__)}"

    return lambda: "no data yet: " + "; ".join(one(s) for s in sources)


@contextlib.contextmanager
def logs_to_file(db_path: Path, kind: str) -> Iterator[Path]:
    """Everything that would write to the terminal under the dashboard goes to
    `<database>.<kind>.log` (a lake's: next to the default database) while the block runs:
    Python logging (ours, uvicorn's, Agent Lightning's stdlib loggers), structlog (Agent
    Lightning's server logs through it), warnings, and print() or handlers bound to
    sys.stdout/sys.stderr later (uvicorn configures its handlers when the gateway starts).
    Yields the log's path; the terminal is given back when the block ends."""
    from ...records.files import make_dirs, open_append

    import structlog

    path = db_path.with_name(f"{db_path.name}.{kind}.log")
    make_dirs(path.parent)
    stream = open(open_append(path), "a", encoding="utf-8", buffering=1)
    root = logging.getLogger()
    watch = logging.getLogger("tractatus_watch")
    # Put back when the block ends (the process may go on: tests, the demo's report).
    saved = (list(root.handlers), list(watch.handlers), watch.propagate,
             structlog.get_config())
    for h in saved[0]:
        root.removeHandler(h)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    for h in saved[1]:  # the collectors' own JSON handler writes to stderr too
        watch.removeHandler(h)
    watch.propagate = True
    _structlog_to_logging()
    logging.captureWarnings(True)
    try:
        with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
            yield path
    finally:
        logging.captureWarnings(False)
        # Handlers made meanwhile on the log's stream (uvicorn's) would write to a closed file.
        reroute_stream_handlers(stream, to=sys.stderr)
        root.removeHandler(handler)
        for h in saved[0]:
            root.addHandler(h)
        for h in saved[1]:
            watch.addHandler(h)
        watch.propagate = saved[2]
        structlog.configure(**saved[3])
        stream.close()


def reroute_stream_handlers(stream: IO[str] | None = None, *, to: IO[str] | None = None) -> None:
    """Point every logging handler that writes to the terminal (sys.__stderr__/__stdout__,
    or `stream` when given) at `to` (default: the log the root logger writes)."""
    if to is None:
        to = next((h.stream for h in logging.getLogger().handlers
                   if isinstance(h, logging.StreamHandler)), None)
        if to is None:
            return
    targets = {id(sys.__stderr__), id(sys.__stdout__)} if stream is None else {id(stream)}
    loggers = [logging.getLogger(), *(lg for lg in logging.Logger.manager.loggerDict.values()
                                      if isinstance(lg, logging.Logger))]
    for logger in loggers:
        for h in logger.handlers:
            if (isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
                    and id(h.stream) in targets):
                h.setStream(to)


def _structlog_to_logging() -> None:
    """Agent Lightning's structlog lines through the standard loggers (hence the log file),
    warnings and above as before (cli/app.py)."""
    import structlog

    structlog.configure(
        processors=[structlog.processors.format_exc_info,
                    structlog.processors.KeyValueRenderer(key_order=["event"])],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
