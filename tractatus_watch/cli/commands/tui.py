"""Dashboard commands: open (a stored database, read-only) and live (collect and watch)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..app import DataPathOption, DbOption, TokenFileOption, app, open_store, pick_run
from ..config import CliError, default_db_path, resolve_store
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
        run_dashboard(store, run_id=run_id, baseline_run=baseline_run, interval=interval,
                      title=f"tractatus-watch · {store.target.short}", view=view)


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
    target = resolve_store(db, data_path)
    plan = serve_plan(serve, serve_public, token_file, target, timeout_s=serve_timeout)
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
    log_path = _log_to_file(store.path or default_db_path())
    session = CollectionSession(
        store, sources, run_id=run or "default",
        alert_rules=None if no_alerts else load_default_alert_rules(),
        alert_interval_s=ALERT_EVERY_S, serve=plan)
    try:
        session.start()
        run_dashboard(store, run_id=run, live_writer=session.writer,
                      source_health=session.health, silence_writer=session.silence_writer,
                      interval=interval, title="tractatus-watch live", view=view)
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


def _log_to_file(db_path: Path) -> Path:
    """The collectors log to stderr, which would draw over the dashboard: send it to a file
    next to the database (a lake's: next to the default database) instead."""
    path = db_path.with_name(db_path.name + ".live.log")
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    watch = logging.getLogger("tractatus_watch")
    for h in list(watch.handlers):  # the collectors' own JSON handler writes to stderr too
        watch.removeHandler(h)
    watch.propagate = True
    return path
