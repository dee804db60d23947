"""Collector commands: collect, gateway, ingest, hooks-path."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from ..app import (DataPathOption, DbOption, ExperimentOption, app, experiment_meta, open_store,
                   read_token)
from ..config import CliError, resolve_store
from ...storage.target import StoreTarget
from ..bridge_options import (BridgeOptions, MetricsOption, OtlpOption, TensorBoardOption,
                              WandbOption, make_bridges)
from .alerts import RulesOption, load_ruleset

if TYPE_CHECKING:  # the session and what it pulls in (~0.5 s) load only when a command runs
    from ...collectors.gateway_govern import GatewayGovernance
    from ...monitor.session import ServePlan

KeyFileOption = Annotated[Optional[Path], typer.Option(
    "--key-file", dir_okay=False,
    help="File holding the Agent Lightning key (default: $AGL_KEY). Never pass the key itself "
         "as an argument: it would show in `ps`.")]
# For commands that resume their run (collectors.runner.resume_run_id).
ResumeRunOption = Annotated[Optional[str], typer.Option(
    # No square brackets: the help renderer would take them for markup and drop them.
    "--run", help="Run id for records that carry none. Default: the run these sources were "
                  "last collected into, stored with their cursors, so a restarted collect "
                  "continues it; on a first start <command>-<YYYYmmdd-HHMMSS>.")]
ServeOption = Annotated[Optional[str], typer.Option(
    "--serve", metavar="[HOST:]PORT",
    help="Serve the live database read-only over Quack, for `tractatus-watch open --remote "
         "quack:HOST:PORT` (host 127.0.0.1 unless given). The token is read from --token-file, "
         "or generated into <database>.quack-token (mode 0600, removed on exit).")]
ServeTokenFileOption = Annotated[Optional[Path], typer.Option(
    "--token-file", dir_okay=False, metavar="FILE",
    help="With --serve: the token viewers must present, the first line of FILE (at least 16 "
         "characters); without it a new one is written to <database>.quack-token.")]
ServeTimeoutOption = Annotated[Optional[float], typer.Option(
    "--serve-timeout", metavar="SECONDS",
    help="With --serve: stop a viewer's query that runs longer than this on the collector "
         "(default 30).")]
ServePublicOption = Annotated[bool, typer.Option(
    "--serve-public", help="Allow --serve on an address other than loopback. Quack speaks "
                           "plain HTTP: put a TLS reverse proxy in front.")]


def _key(key_file: Path | None) -> str | None:
    from ...collectors.runner import KeyFileError, load_key

    try:
        return load_key(key_file)
    except KeyFileError as exc:
        raise CliError(str(exc)) from None


def _notifiers(alert_log: Path | None, webhook: str | None,
               webhook_token_file: Path | None) -> list[Any]:
    from ...analysis.alerts.notify import JsonlNotifier, WebhookNotifier

    out: list[Any] = []
    if alert_log:
        out.append(JsonlNotifier(alert_log))
    if webhook:
        out.append(WebhookNotifier(
            webhook, group_by=("alertname", "run_id"),
            bearer_token_file=webhook_token_file,
            bearer_token_env=None if webhook_token_file else "TRACTATUS_WATCH_WEBHOOK_TOKEN"))
    return out


def _check_webhook_token(webhook_token_file: Path | None) -> None:
    """The notifier reads the token at each send (a rotated one is picked up); a file that
    cannot serve is refused at the start, in one line."""
    from ...records.files import SecretFileError, read_secret

    if webhook_token_file is not None:
        try:
            read_secret(webhook_token_file, "the webhook token file")
        except SecretFileError as exc:
            raise CliError(str(exc)) from None


def collect_sources(agl: list[str], spool: list[Path], gateway: bool, host: str, port: int,
                    key: str | None, writer_run: str = "",
                    gateway_wal: Path | None = None) -> list[Any]:
    from ...collectors.gateway_tap import GatewayTap
    from ...collectors.poller import Poller
    from ...collectors.spool_reader import SpoolReader

    sources: list[Any] = [Poller(url, key=key, run_id=writer_run) for url in agl]
    sources += [SpoolReader(folder) for folder in spool]
    if gateway:
        # The sink is handed over by run_sources.
        sources.append(GatewayTap(lambda records: None, host=host, port=port, key=key,
                                  run_id=writer_run, wal_dir=gateway_wal))
    return sources


def serve_plan(serve: str | None, serve_public: bool, token_file: Path | None,
               target: StoreTarget, *, timeout_s: float | None = None) -> ServePlan | None:
    """Check --serve, --serve-public, --token-file and --serve-timeout (one-line errors,
    before any work)."""
    from ...monitor.session import ServePlan
    from ...storage.serve import DEFAULT_TIMEOUT_S, check_servable, check_token, parse_address

    if serve is None:
        if serve_public or token_file is not None or timeout_s is not None:
            raise CliError("--serve-public, --serve-timeout and --token-file go with --serve "
                           "[HOST:]PORT")
        return None
    if timeout_s is not None and not 0 < timeout_s <= 86_400:
        raise CliError(f"--serve-timeout: expected seconds between 0 and 86400, got {timeout_s:g}")
    host, port = parse_address(serve)
    check_servable(target, host, port, public=serve_public)
    token = read_token(token_file) if token_file is not None else None
    if token is not None:
        check_token(token)
    return ServePlan(host, port, serve_public, token,
                     DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s)


@app.command()
def collect(
    agl: Annotated[Optional[list[str]], typer.Option(
        "--agl", help="Attach read-only to a running Agent Lightning gateway (repeatable).")]
    = None,
    spool: Annotated[Optional[list[Path]], typer.Option(
        "--spool", file_okay=False, help="Ingest a spool folder written by the hooks file or "
                                         "the Governor (repeatable).")] = None,
    gateway: Annotated[bool, typer.Option(
        "--gateway", help="Run the Agent Lightning gateway here and capture everything.")]
    = False,
    host: Annotated[str, typer.Option("--host", help="Gateway address (with --gateway).")]
    = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Gateway port (with --gateway).")] = 8080,
    key_file: KeyFileOption = None,
    run: ResumeRunOption = None,
    rules: RulesOption = None,
    alert_interval: Annotated[float, typer.Option(
        "--alert-interval", min=0.5, help="Seconds between alert evaluations.")] = 5.0,
    alert_log: Annotated[Optional[Path], typer.Option(
        "--alert-log", dir_okay=False, help="Append alert transitions to this JSONL file.")]
    = None,
    webhook: Annotated[Optional[str], typer.Option(
        "--webhook", help="POST Alertmanager v4 JSON to this URL (bearer token from "
                          "$TRACTATUS_WATCH_WEBHOOK_TOKEN or --webhook-token-file).")] = None,
    webhook_token_file: Annotated[Optional[Path], typer.Option(
        "--webhook-token-file", dir_okay=False)] = None,
    serve: ServeOption = None, serve_public: ServePublicOption = False,
    token_file: ServeTokenFileOption = None, serve_timeout: ServeTimeoutOption = None,
    experiment: ExperimentOption = None,
    metrics: MetricsOption = None, tensorboard: TensorBoardOption = None,
    wandb: WandbOption = None, otlp: OtlpOption = None,
    db: DbOption = None, data_path: DataPathOption = None,
) -> None:
    """Collect headless from Agent Lightning (poller, gateway) and spools, with alert
    evaluation. Structured log lines on stderr; SIGINT/SIGTERM flush and exit 0.

    With --serve, dashboards in other processes watch the database live
    (`open --remote quack:HOST:PORT --token-file <database>.quack-token`)."""
    from ...collectors.gateway_wal import wal_folder
    from ...collectors.runner import adopt_run_id, resume_run_id, setup_logging
    from ...monitor.session import CollectionSession

    if not (agl or spool or gateway):
        raise CliError("nothing to collect from: give --agl URL, --spool DIR or --gateway")
    ruleset = load_ruleset(rules)
    meta = experiment_meta(experiment)
    _check_webhook_token(webhook_token_file)
    key = _key(key_file)
    target = resolve_store(db, data_path)
    plan = serve_plan(serve, serve_public, token_file, target, timeout_s=serve_timeout)
    bridges = make_bridges(BridgeOptions(metrics, tensorboard, wandb, otlp), ruleset)
    setup_logging()
    with open_store(target, read_only=False) as store:
        sources = collect_sources(agl or [], spool or [], gateway, host, port, key,
                                  gateway_wal=wal_folder(target, host, port))
        run_id = resume_run_id(store, [s.source for s in sources], run, "collect")
        adopt_run_id(sources, run_id)
        result = CollectionSession(
            store, sources, run_id=run_id, alert_rules=ruleset,
            notifiers=_notifiers(alert_log, webhook, webhook_token_file),
            alert_interval_s=alert_interval, serve=plan, run_meta=meta,
            bridges=bridges).run()
    _exit_on_source_errors(result.errors)


def _exit_on_source_errors(errors: dict[str, str]) -> None:
    if errors:
        for source, error in errors.items():
            print(f"error: {source}: {error}", file=sys.stderr)
        raise typer.Exit(2)


# One paragraph per line: the help renderer keeps line breaks and wraps the lines itself.
_GATEWAY_HELP = "\n\n".join([
    "Run the real Agent Lightning gateway and capture every event it records (zero loss).",
    "Trainers, controllers and agents use it exactly as `agl-server`, and it takes "
    "agl-server's arguments: Hydra overrides such as `default_proxy.model_name=MODEL` "
    "(also `+KEY=VALUE`, `++KEY=VALUE`, `~KEY`) and --config-path/-cp, --config-dir/-cd, "
    "--config-name/-cn, composed by Hydra over Agent Lightning's own configuration: "
    "`tractatus-watch gateway host=127.0.0.1 port=N default_proxy.model_name=X` serves what "
    "`agl-server host=127.0.0.1 port=N default_proxy.model_name=X` serves.",
    "Which wins: an override on the command line (`port=9001`) over the option for the same "
    "setting (`--port 9000`), with a note on stderr; an option over the configuration files.",
    "Unlike agl-server: without `host` on the command line it listens on 127.0.0.1 "
    "(agl-server: 0.0.0.0); the key comes from $AGL_KEY or --key-file (agl-server only takes "
    "`key=`, accepted here too with a warning, as it shows in `ps`; `key=${oc.env:AGL_KEY}` "
    "does not); Hydra's own flags (--cfg, --multirun, ...) are not taken and no outputs/ "
    "folder is written.",
    "With --govern [RULES], the proxy runs the Governor's services on every tool call of a chat "
    "completion before it returns to the agent: a stopped call is replaced by a refusal in the "
    "message, every decision is recorded with enforced_at gateway, and `stream: true` is "
    "refused (400). --govern-mode shadow records the decisions and leaves responses as they "
    "are.",
])


@app.command(name="gateway", help=_GATEWAY_HELP)
def gateway_command(
    overrides: Annotated[Optional[list[str]], typer.Argument(
        metavar="KEY=VALUE", show_default=False,
        help="agl-server's Hydra overrides, e.g. default_proxy.model_name=Qwen/Qwen3-8B "
             "default_proxy.train.temperature=0.8 port=8080; with --govern, also its RULES "
             "files (an argument without `=`).")] = None,
    host: Annotated[Optional[str], typer.Option(
        "--host", show_default=False,
        help="Address to listen on (default 127.0.0.1; `host=` wins).")] = None,
    port: Annotated[Optional[int], typer.Option(
        "--port", show_default=False,
        help="Port to listen on (default: the configuration's, 8080; `port=` wins).")] = None,
    config_path: Annotated[Optional[str], typer.Option(
        "--config-path", "-cp", metavar="PATH",
        help="As agl-server's: the primary config's folder (absolute, or pkg://MODULE).")]
    = None,
    config_dir: Annotated[Optional[str], typer.Option(
        "--config-dir", "-cd", metavar="DIR",
        help="As agl-server's: one more folder to look for configs in.")] = None,
    config_name: Annotated[Optional[str], typer.Option(
        "--config-name", "-cn", metavar="NAME",
        help="As agl-server's: the primary config's name (default server).")] = None,
    key_file: KeyFileOption = None,
    run: ResumeRunOption = None,
    govern: Annotated[bool, typer.Option(
        "--govern", help="Govern every tool call in the LLM proxy's chat completions before it "
                         "returns to the agent, with the Governor's default services, or over "
                         "RULES: rule files (Tractatus .json, .toml) given among the arguments.")]
    = False,
    govern_mode: Annotated[Optional[str], typer.Option(
        "--govern-mode", metavar="enforce|shadow", show_default=False,
        help="With --govern: enforce (default; a stopped call is replaced by a refusal) or "
             "shadow (decisions recorded, responses untouched).")] = None,
    govern_arm: Annotated[Optional[str], typer.Option(
        "--govern-arm", metavar="ARM", show_default=False,
        help="With --govern: the arm of rollouts whose metadata names none (default governed; "
             "ungoverned in shadow mode).")] = None,
    experiment: ExperimentOption = None,
    metrics: MetricsOption = None, tensorboard: TensorBoardOption = None,
    wandb: WandbOption = None, otlp: OtlpOption = None,
    db: DbOption = None, data_path: DataPathOption = None,
) -> None:
    from ...collectors.gateway_config import ConfigArgs, GatewayConfigError, gateway_config
    from ...collectors.gateway_tap import GatewayTap
    from ...collectors.gateway_wal import wal_folder
    from ...collectors.runner import adopt_run_id, resume_run_id, setup_logging
    from ...monitor.session import CollectionSession

    meta = experiment_meta(experiment)
    overrides, rule_files = _split_rules(overrides or [], govern)
    governance = _governance(govern, rule_files, govern_mode, govern_arm)
    key = _key(key_file)
    try:
        config = gateway_config(ConfigArgs(tuple(overrides), config_path, config_dir,
                                           config_name), host=host, port=port, key=key)
    except GatewayConfigError as exc:
        raise CliError(f"gateway configuration: {exc}") from None
    for note in config.notes:
        print(note, file=sys.stderr)
    target = resolve_store(db, data_path)
    bridges = make_bridges(BridgeOptions(metrics, tensorboard, wandb, otlp))
    setup_logging()
    with open_store(target, read_only=False) as store:
        tap = GatewayTap(lambda records: None, config=config.server,
                         wal_dir=wal_folder(target, config.host, config.port),
                         govern=governance)
        run_id = resume_run_id(store, [tap.source], run, "gateway")
        adopt_run_id([tap], run_id)
        result = CollectionSession(store, [tap], run_id=run_id, run_meta=meta,
                                   bridges=bridges).run()
    _exit_on_source_errors(result.errors)


def _split_rules(arguments: list[str], govern: bool) -> tuple[list[str], list[str]]:
    """agl-server's overrides and, with --govern, the RULES files among the arguments: an
    override always has `=` or starts with `~`; anything else is a rule file."""
    if not govern:
        return arguments, []
    overrides = [a for a in arguments if "=" in a or a.startswith("~")]
    return overrides, [a for a in arguments if a not in overrides]


def _governance(govern: bool, rule_files: list[str], mode: str | None,
                arm: str | None) -> GatewayGovernance | None:
    """--govern [RULES], --govern-mode and --govern-arm, checked (one-line errors)."""
    from ...collectors.gateway_govern import GOVERN_MODES, GatewayGovernance
    from ...governance.services import RuleError, default_services, load_rules

    if not govern:
        if mode is not None or arm is not None:
            raise CliError("--govern-mode and --govern-arm go with --govern")
        return None
    if mode is not None and mode not in GOVERN_MODES:
        raise CliError(f"--govern-mode: expected one of {', '.join(GOVERN_MODES)}, got {mode!r}")
    if arm is not None and not arm.strip():
        raise CliError("--govern-arm: expected an arm name such as governed")
    try:
        services = default_services(load_rules(*rule_files)) if rule_files else None
    except RuleError as exc:
        raise CliError(f"--govern: {exc}") from None
    return GatewayGovernance(services, mode="shadow" if mode == "shadow" else "enforce",
                             arm=arm)


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(
        help="Tractatus audit logs: mongoexport JSON/JSONL of auditLogs, decisions-*.jsonl, "
             "generic audit JSONL; folders are searched.")],
    run: Annotated[Optional[str], typer.Option("--run", help="Run id [default: audit].")]
    = None,
    arm: Annotated[str, typer.Option("--arm", help="Arm the decisions belong to.")]
    = "governed",
    db: DbOption = None, data_path: DataPathOption = None,
) -> None:
    """Ingest Tractatus audit logs. Re-ingesting a file stores nothing new."""
    from ...collectors.audit import AuditDefaults, ingest_audit
    from ...collectors.sink import writer_sink
    from ...storage.writer import Writer

    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise CliError(f"no such file: {', '.join(missing)}")
    run_id = run or "audit"
    with open_store(db, data_path, read_only=False) as store:
        writer = Writer(store)
        try:
            summary = ingest_audit(list(paths), writer_sink(writer, run_id),
                                   defaults=AuditDefaults(run_id=run_id, arm=arm),
                                   get_cursor=store.get_cursor)
        finally:
            writer.close()
        stored = writer.stats.committed_rows.get("decisions", 0)
        # Records the writer refused (out-of-range values, ...), beyond the file's own count.
        refused = writer.stats.quarantined - summary.quarantined
    for line in summary.lines():  # plain print: these lines are for grep as much as for eyes
        print(line)
    print(f"stored: {stored} new decisions in run {run_id}"
          + (f"; {refused} more quarantined while storing" if refused > 0 else ""))


@app.command(name="hooks-path")
def hooks_path_command() -> None:
    """Print the path of the hooks file for the trainer's `agentlightning.hooks` setting."""
    from ...governance import hooks_path

    print(hooks_path())
