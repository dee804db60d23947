"""The demo command: a governed training job through the real Agent Lightning gateway."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..app import DataPathOption, DbOption, ExperimentOption, app, experiment_meta, open_store
from ..config import CliError, resolve_store
from ...storage.target import StoreTarget
from ..output import console

# Timing-dependent figures are left out of --format json so that a seed fully determines it.
TIMING_KEYS = ("latency_p50_us", "latency_p99_us", "overhead_share", "run_id")


class DemoFormat(str, Enum):
    table = "table"
    json = "json"


def parse_speed(text: str | None) -> float | None:
    if text is None or text == "max":
        return None
    try:
        value = float(text)
    except ValueError:
        raise CliError(f"--speed: expected rounds per second or 'max', got {text!r}") from None
    if value <= 0:
        raise CliError("--speed must be above 0")
    return value


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def demo_json(report: Any, session: Any, scenario: Any, seed: int) -> dict[str, Any]:
    out = report.to_json()
    arms = {arm: {k: v for k, v in values.items() if k not in TIMING_KEYS}
            for arm, values in out["arms"].items()}
    alerts = sorted(({"alertname": f.alertname, "arm": f.labels.get("arm", ""),
                      "round": f.round, "severity": f.severity} for f in session.fired),
                    key=lambda a: (a["round"], a["alertname"], a["arm"]))
    return _rounded({"scenario": scenario.name, "seed": seed, "run_id": session.run_id,
                     "agents": scenario.agents,
                     "rounds": scenario.rounds, "arms": arms,
                     "difference": out["difference"], "alerts": alerts,
                     "ungoverned_actions": [{k: u[k] for k in ("agent_id", "arm", "round",
                                                               "tool", "rollout_id")}
                                            for u in out["ungoverned_actions"]],
                     "per_agent": out["agents"]})


@app.command()
def demo(
    scenario: Annotated[str, typer.Option(
        "--scenario", help="demo2, scale, persistence, adversarial, gap, multiagent, showcase, "
                           "bypass.")]
    = "showcase",
    agents: Annotated[Optional[int], typer.Option("--agents", min=1, help="Agents per arm.")]
    = None,
    rounds: Annotated[Optional[int], typer.Option("--rounds", min=1, help="Training rounds.")]
    = None,
    seed: Annotated[Optional[int], typer.Option(
        "--seed", help="Same seed, same results [default: 1].")] = None,
    seeds: Annotated[Optional[str], typer.Option(
        "--seeds", metavar="SEEDS", help="Run these seeds one after another (headless), e.g. "
        "1-10 or 1,3,5: one run per seed, grouped as one experiment for `research`.")] = None,
    experiment: ExperimentOption = None,
    arms: Annotated[str, typer.Option(
        "--arms", help="The arms to train, a comma list of governed (blocking), penalized (a "
                       "violation costs reward and runs), ungoverned (shadow).")]
    = "governed,ungoverned",
    speed: Annotated[Optional[str], typer.Option(
        "--speed", help="Rounds per second, or 'max' [default: the scenario's pace].")] = None,
    headless: Annotated[bool, typer.Option(
        "--headless", help="No dashboard: run to the end, print the report and alerts.")]
    = False,
    fmt: Annotated[DemoFormat, typer.Option("--format", help="Headless output format.")]
    = DemoFormat.table,
    agl: Annotated[Optional[str], typer.Option(
        "--agl", help="Train through this running Agent Lightning gateway (captured by the "
                      "poller) instead of an in-process one.")] = None,
    key_file: Annotated[Optional[Path], typer.Option(
        "--key-file", dir_okay=False, help="Agent Lightning key for --agl (else $AGL_KEY).")]
    = None,
    model_name: Annotated[Optional[str], typer.Option(
        "--model-name", help="The model the --agl gateway proxies (its "
        "default_proxy.model_name); the demo registers its policies under it, replacing the "
        "gateway's model servers as the verl trainer does [default: Agent Lightning's "
        "default].")] = None,
    db: DbOption = None, data_path: DataPathOption = None,
) -> None:
    """Governed vs ungoverned RL training through a real Agent Lightning gateway.

    Reproduces Demo 2 of the Tractatus + Agent Lightning integration and the five research
    questions as scenarios. Opens the live dashboard unless --headless."""
    from ...demo.scenarios import SCENARIOS, parse_arms

    if scenario not in SCENARIOS:
        raise CliError(f"unknown scenario {scenario!r}; choose from {', '.join(SCENARIOS)}")
    try:
        base = SCENARIOS[scenario].with_overrides(arms=parse_arms(arms))
    except ValueError as exc:
        raise CliError(f"--arms: {exc}") from None
    pace = parse_speed(speed) if speed is not None else (None if headless else base.speed)
    if model_name is not None and not agl:
        raise CliError("--model-name is for --agl: the in-process gateway's model is the demo's")
    if model_name is not None and not model_name.strip():
        raise CliError("--model-name: expected the gateway's model name, got an empty one")
    seed_list = _seeds(seed, seeds, headless)
    name = experiment or f"{scenario}-{time.strftime('%Y%m%d-%H%M%S')}"
    experiment_meta(name)  # a bad name fails before training
    key = _agl_key(key_file) if agl else None
    if agl:
        check_gateway(agl, key)
    target = resolve_store(db, data_path)
    gateway = _Gateway(agl, key, model_name)
    sc = base.with_overrides(agents=agents, rounds=rounds)
    if scenario == "scale":
        _run_scale(sc, seed_list, pace, gateway, target, fmt, name)
    elif headless:
        _run_seeds(sc, seed_list, pace, gateway, target, fmt, name)
    else:
        _run_live(sc, seed_list[0], pace, gateway, target, name)


MAX_SEEDS = 1000


def parse_seeds(text: str) -> list[int]:
    """`1-10`, `1,3,5` or a mix (`1-3,7`): the seeds in the order given, each once."""
    out: list[int] = []
    for part in text.split(","):
        lo, sep, hi = part.strip().partition("-")
        try:
            first = int(lo)
            last = int(hi) if sep else first
        except ValueError:
            raise CliError(f"--seeds: expected seeds such as 1-10 or 1,3,5, got {text!r}"
                           ) from None
        if first < 0 or last < first:
            raise CliError(f"--seeds: {part.strip()!r} is not an increasing range of seeds "
                           ">= 0")
        if last - first >= MAX_SEEDS:
            raise CliError(f"--seeds: at most {MAX_SEEDS} seeds")
        out.extend(s for s in range(first, last + 1) if s not in out)
    if len(out) > MAX_SEEDS:
        raise CliError(f"--seeds: at most {MAX_SEEDS} seeds")
    return out


def _seeds(seed: int | None, seeds: str | None, headless: bool) -> list[int]:
    if seeds is None:
        return [1 if seed is None else seed]
    if seed is not None:
        raise CliError("give --seed N or --seeds SEEDS, not both")
    out = parse_seeds(seeds)
    if len(out) > 1 and not headless:
        raise CliError("--seeds runs one seed after another without the dashboard: add "
                       "--headless")
    return out


def run_meta(sc: Any, seed: int, experiment: str) -> dict[str, Any]:
    """What makes a demo run a replicate of its experiment (storage/experiments.py)."""
    return {"experiment": experiment, "scenario": sc.name, "seed": seed, "agents": sc.agents,
            "arms": list(sc.arms), "rounds": sc.rounds, "adversarial_round": sc.adversarial_round,
            "bypass_round": sc.bypass_round}


@dataclass(frozen=True)
class _Gateway:
    """Where the demo trains: an external gateway (`--agl`, its key and the model it proxies),
    or None for the in-process one."""

    url: str | None
    key: str | None
    model_name: str | None


def no_model_server(exc: BaseException, gateway: _Gateway) -> CliError:
    """What to do when the gateway's proxy has no server for its model (HTTP 503): it proxies
    another model name than the one the demo registered its policies under."""
    from ...demo.job import default_model_name

    registered = gateway.model_name or default_model_name()
    where = gateway.url or "the in-process gateway"
    return CliError(f"Agent Lightning at {where} answered HTTP 503 to the demo's model "
                    f"calls ({_reason(exc)}); the demo registered its policies as "
                    f"{registered!r}: pass the gateway's default_proxy.model_name with "
                    "--model-name")


def _agl_key(key_file: Path | None) -> str | None:
    from ...collectors.runner import KeyFileError, load_key

    try:
        return load_key(key_file)
    except KeyFileError as exc:
        raise CliError(str(exc)) from None


def check_gateway(url: str, key: str | None, timeout_s: float = 10.0) -> None:
    """One authenticated read of the gateway before training, so that a dead address or a
    wrong key is a one-line error instead of a failure deep in the training job."""
    import httpx

    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        resp = httpx.get(url.rstrip("/") + "/api/rollouts", headers=headers,
                         params={"state_in": "running", "limit": 1}, timeout=timeout_s)
    except httpx.InvalidURL as exc:
        raise CliError(f"--agl {url}: not a gateway URL ({exc})") from None
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach Agent Lightning at {url}: "
                       f"{_reason(exc)}") from None
    if resp.status_code == 401:
        raise CliError(f"Agent Lightning at {url} refused the key (HTTP 401): --key-file or "
                       "AGL_KEY must hold the key the gateway was started with")
    if resp.status_code != 200:
        raise CliError(f"Agent Lightning at {url} answered HTTP {resp.status_code} to "
                       "GET /api/rollouts; is it an Agent Lightning 1.0 gateway?")


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _run_id(name: str, seed: int) -> str:
    return f"{name}-s{seed}-{time.strftime('%Y%m%d-%H%M%S')}"


def _session(store: Any, sc: Any, seed: int, pace: float | None, gateway: _Gateway,
             experiment: str, **kw: Any) -> Any:
    from ...demo.session import DemoSession

    return DemoSession(store, sc, seed, _run_id(sc.name, seed), speed=pace,
                       agl_url=gateway.url, agl_key=gateway.key,
                       model_name=gateway.model_name,
                       run_meta=run_meta(sc, seed, experiment), **kw)


def _stop_on_signals(stop: threading.Event) -> None:
    def handler(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


class TrainingProgress:
    """Rounds trained, on stderr: a rich progress bar on a terminal; elsewhere (a log, CI) a
    plain line at every tenth of the work, so a long headless run is never silent."""

    STEPS = 10

    def __init__(self, err: Any, total: int, label: str) -> None:
        self.err, self.total, self.label = err, max(1, total), label
        self.tty = sys.stderr.isatty()
        self._shown = 0   # tenths printed (plain lines)
        self._bar: Any = None

    def __enter__(self) -> TrainingProgress:
        if self.tty:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

            self._bar = Progress("[progress.description]{task.description}", BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(), console=self.err,
                                 transient=True)
            self._bar.__enter__()
            self._task = self._bar.add_task(self.label, total=self.total)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def describe(self, label: str) -> None:
        self.label = label
        if self._bar is not None:
            self._bar.update(self._task, description=label)

    def advance_to(self, done: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=done)
            return
        tenth = done * self.STEPS // self.total
        if tenth > self._shown:
            self._shown = tenth
            self.err.print(f"{self.label}: {done}/{self.total} rounds")

    def note(self, line: str) -> None:
        """A line for logs (a terminal has the bar)."""
        if self._bar is None:
            self.err.print(line)


def _run_seeds(sc: Any, seeds: list[int], pace: float | None, gateway: _Gateway,
               target: StoreTarget, fmt: DemoFormat, experiment: str) -> None:
    """Headless: train each seed in turn, one run each, then print the report (one seed) or
    the experiment's per-seed summary."""
    from ...demo.job import DemoStopped, NoModelServer
    from ...monitor.report import build_report

    err = console(stderr=True)
    done: list[tuple[int, Any, Any]] = []  # (seed, session, report)
    with open_store(target, read_only=False) as store:
        with TrainingProgress(err, sc.rounds * len(seeds), f"{sc.name}: training") as progress:
            for i, seed in enumerate(seeds):
                if len(seeds) > 1:
                    progress.describe(f"{sc.name} seed {seed} ({i + 1}/{len(seeds)})")

                def advance(r: Any, before: int = i * sc.rounds) -> None:
                    progress.advance_to(before + r.round + 1)

                # About a commit a round (the session flushes each round), not one every 50 ms:
                # no dashboard reads the store mid-run, and a commit costs a dozen statements.
                session = _session(store, sc, seed, pace, gateway, experiment,
                                   flush_interval_s=1.0, on_round=advance)
                _stop_on_signals(session.stop)
                stopped = False
                try:
                    session.run()
                except NoModelServer as exc:
                    raise no_model_server(exc, gateway) from None
                except DemoStopped:
                    stopped = True
                    err.print(f"stopped after {len(session.rounds)} rounds of seed {seed}; "
                              f"what was captured is stored as run {session.run_id}")
                done.append((seed, session, build_report(store.cursor(), session.run_id)))
                progress.note(f"seed {seed} ({i + 1}/{len(seeds)}): run {session.run_id}, "
                              f"{len(session.rounds)} rounds")
                if stopped:
                    break
    if len(seeds) == 1:
        _print_one(done[0], sc, fmt, experiment, store.label)
    else:
        _print_experiment(done, sc, fmt, experiment, store.label)


def _print_one(run: tuple[int, Any, Any], sc: Any, fmt: DemoFormat, experiment: str,
               label: str) -> None:
    from ..report_render import agent_table, rich_table

    seed, session, report = run
    if fmt == DemoFormat.json:
        print(json.dumps({**demo_json(report, session, sc, seed), "experiment": experiment,
                          "store": label}, indent=2))
        return
    out = console()
    out.print(rich_table(report))
    agents = agent_table(report)
    if agents is not None:
        out.print(agents)
    if session.fired:
        out.print("alerts fired:")
        for f in session.fired:
            out.print(f"  round {f.round}: {f.alertname} ({f.severity}) "
                      f"arm={f.labels.get('arm', '')}")
    else:
        out.print("alerts fired: none")
    out.print(f"run {session.run_id} (experiment {experiment}) stored in {label}")


def _print_experiment(runs: list[tuple[int, Any, Any]], sc: Any, fmt: DemoFormat,
                      experiment: str, label: str) -> None:
    from rich.table import Table

    if fmt == DemoFormat.json:
        print(json.dumps({"experiment": experiment, "scenario": sc.name, "store": label,
                          "seeds": [seed for seed, _, _ in runs],
                          "runs": [demo_json(report, session, sc, seed)
                                   for seed, session, report in runs]}, indent=2))
        return
    arms = sorted({arm for _, _, report in runs for arm in report.arms})
    table = Table(title=f"{sc.name}: {len(runs)} seeds (experiment {experiment})",
                  header_style="bold")
    table.add_column("seed", justify="right")
    for arm in arms:
        for figure in ("performance", "coverage", "escaped"):
            table.add_column(f"{arm} {figure}", justify="right")
    table.add_column("alerts", justify="right")
    for seed, session, report in runs:
        cells = [str(seed)]
        for arm in arms:
            m = report.arms.get(arm)
            cells += ([_fmt(m.performance, ".4f"), _fmt(m.coverage, ".1%"),
                       str(m.escaped_violations)] if m is not None else ["", "", ""])
        table.add_row(*cells, str(len(session.fired)))
    out = console()
    out.print(table)
    out.print(f"experiment {experiment} stored in {label}: `tractatus-watch research "
              f"--experiment {experiment}` compares the seeds")


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _run_live(sc: Any, seed: int, pace: float | None, gateway: _Gateway,
              target: StoreTarget, experiment: str) -> None:
    """Train in a background thread while the dashboard shows the run; when training ends the
    dashboard stays on the final state until the user quits (quitting early stops training)."""
    from ...demo.job import DemoStopped, NoModelServer
    from ...storage.alert_store import DuckDBAlertStore
    from ...tui import run_dashboard
    from ..config import default_db_path
    from .tui import logs_to_file, reroute_stream_handlers

    with open_store(target, read_only=False) as store, \
            logs_to_file(store.path or default_db_path(), "demo") as log_path:
        session = _session(store, sc, seed, pace, gateway, experiment)
        failure: list[BaseException] = []

        def train() -> None:
            try:
                session.run()
            except DemoStopped:
                pass
            except BaseException as exc:  # shown after the dashboard closes
                failure.append(exc)

        def starting() -> str:
            return demo_situation(len(session.rounds), sc.rounds, thread.is_alive(),
                                  failure[0] if failure else None)

        thread = threading.Thread(target=train, name="demo-training", daemon=True)
        thread.start()
        alerts = DuckDBAlertStore(store)
        try:
            reroute_stream_handlers()
            run_dashboard(store, run_id=session.run_id, source_health=session.health,
                          silence_writer=alerts.add_silence,
                          silence_expirer=alerts.expire_silence, interval=1.0,
                          title=f"tractatus-watch demo: {sc.name} (seed {seed})",
                          empty_state=starting, log_prints=True)
        finally:
            session.stop.set()
            thread.join(60)
    console(stderr=True).print(f"run {session.run_id} stored in {store.label}; "
                               f"log: {log_path}")
    if failure and isinstance(failure[0], NoModelServer):
        raise no_model_server(failure[0], gateway)
    if failure:
        raise CliError(f"training failed: {failure[0]}")


def demo_situation(done: int, total: int, running: bool,
                   failure: BaseException | None = None) -> str:
    """What an empty dashboard view says in `demo`: the demo's state, never the general "no
    data yet" hint (the gateway takes a few seconds to start before the first decisions)."""
    if failure is not None:
        return f"the demo failed after {done} of {total} rounds: {_reason(failure)} (see the log)"
    if not running:
        return f"the demo finished ({done} of {total} rounds): nothing for this view in the run"
    if done == 0:
        return f"starting the demo: round 1 of {total} (the gateway takes a few seconds)"
    return f"the demo is running: round {done + 1} of {total}, nothing for this view so far"


def _number(value: object) -> float:
    """A polars aggregate as a float: None (an empty column) is 0."""
    return float(value) if isinstance(value, int | float) else 0.0


def _run_scale(sc: Any, seeds: list[int], pace: float | None, gateway: _Gateway,
               target: StoreTarget, fmt: DemoFormat, experiment: str) -> None:
    """Research question 1: one run per size and seed; governance overhead as agents grow."""
    from rich.table import Table

    from ...demo.job import NoModelServer
    from ...storage import queries as Q

    per_seed: list[dict[str, Any]] = []
    err = console(stderr=True)
    runs = [(seed, n) for seed in seeds for n in sc.sizes]
    with open_store(target, read_only=False) as store, \
            TrainingProgress(err, len(runs) * sc.rounds, "scale: training") as progress:
        for seed in seeds:
            sizes: dict[str, dict[str, Any]] = {}
            for n in sc.sizes:
                k = runs.index((seed, n))
                run_sc = sc.with_overrides(agents=n)
                progress.describe(f"scale: {n} agent(s) per arm, seed {seed}")

                def advance(r: Any, before: int = k * sc.rounds) -> None:
                    progress.advance_to(before + r.round + 1)

                # No dashboard reads a scale run's store mid-run either: a commit a second
                # (and one per judged round), not one every 50 ms of a 2000-rollout round.
                session = _session(store, run_sc, seed, pace, gateway, experiment,
                                   flush_interval_s=1.0, on_round=advance)
                _stop_on_signals(session.stop)
                started = time.monotonic()
                try:
                    session.run()
                except NoModelServer as exc:
                    raise no_model_server(exc, gateway) from None
                seconds = time.monotonic() - started
                lat = Q.latency(store.cursor(), session.run_id)
                actions = sum(r.decisions for r in session.rounds)
                sizes[str(n)] = {
                    "run_id": session.run_id, "agents": n, "rounds": len(session.rounds),
                    "actions": actions, "rounds_per_s": len(session.rounds) / seconds,
                    "actions_per_s": actions / seconds,
                    "overhead_p50_us": _number(lat["p50_us"].median()),
                    "overhead_p99_us": _number(lat["p99_us"].max()),
                    "round_s": seconds / max(1, len(session.rounds)),
                }
            per_seed.append({"seed": seed, "sizes": _rounded(sizes)})
    if fmt == DemoFormat.json:
        ids = {"experiment": experiment, "store": store.label}
        if len(per_seed) == 1:
            print(json.dumps({"scenario": "scale", **per_seed[0], **ids}, indent=2))
        else:
            print(json.dumps({"scenario": "scale", **ids, "seeds": seeds, "runs": per_seed},
                             indent=2))
        return
    table = Table(title="Q1: governance overhead as agents grow", header_style="bold")
    columns = ("agents/arm", "actions", "rounds/s", "actions/s", "overhead p50 us",
               "overhead p99 us")
    for col in (("seed",) if len(per_seed) > 1 else ()) + columns:
        table.add_column(col, justify="right")
    for run in per_seed:
        for s in run["sizes"].values():
            cells = [str(s["agents"]), str(s["actions"]), f"{s['rounds_per_s']:.2f}",
                     f"{s['actions_per_s']:.0f}", f"{s['overhead_p50_us']:.0f}",
                     f"{s['overhead_p99_us']:.0f}"]
            table.add_row(*([str(run["seed"])] if len(per_seed) > 1 else []), *cells)
    out = console()
    out.print(table)
    out.print(f"experiment {experiment} stored in {store.label}")
