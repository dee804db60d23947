"""What the witness and gateway enforcement cost: proxy latency per LLM call through the
in-process gateway, without and with `--govern`, and the tap's extraction of witnessed actions
from one recorded `model_request` event.

1. Proxy latency: the gateway tap (what `tractatus-watch gateway` runs: Agent Lightning's own
   app, served by uvicorn in a thread of this process, 127.0.0.1, a free port, with its
   write-ahead log unless --no-wal) in front of a loopback OpenAI-compatible model stub
   (tests/support/model_stub.py, a thread here too) whose every completion carries `--calls`
   tool calls (half of them violating: the demo's clickbait and personal-data items) and
   per-token logprobs, as vLLM answers the verl trainer. One client asks for completions one
   after another and times each round trip (what an agent waits for). Three variants: the
   plain tap; the governed tap (half the calls stopped: the answer is parsed, checked and
   encoded again); the governed tap on completions with nothing to stop (parsed and checked,
   passed on as it came). They alternate, `--rounds` times each (one tap per process at a
   time), so drifting load hits all alike; percentiles are over all the calls of a variant.
2. Extraction: `records.witness.witnessed_actions` on a recorded model_request event of that
   shape (~100 KB as JSON: request, response with logprobs and token ids), microseconds per
   event, the median of `--repeat` timings of 200 extractions each. Parsing the event's JSON
   (what the poller does anyway to read it) is timed beside it for scale.

    .venv/bin/python bench/witness.py --calls-n 400

The last line is JSON: proxy_p50_us, proxy_p99_us, govern_p50_us, govern_p99_us, extract_us,
govern_unchanged_p50_us, the ratio govern p50 / proxy p50, and the event's size. Figures vary
with the machine's load; this is a benchmark, not a test, and nothing gates on it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _common import last_line  # noqa: E402  (puts tests/ on the path: test support)

import httpx  # noqa: E402

from support.model_stub import StubModelServer  # noqa: E402

from tractatus_watch.collectors.gateway_govern import GatewayGovernance  # noqa: E402
from tractatus_watch.collectors.gateway_tap import GatewayTap, server_config  # noqa: E402
from tractatus_watch.demo.environment import STYLES, item_for  # noqa: E402
from tractatus_watch.records.witness import witnessed_actions  # noqa: E402

MODEL = "bench/policy"
KEY = "bench-witness-key"  # a throwaway gateway on loopback, for this run only
PROXY = "/proxy/rollout/{rid}/attempt/0/mode/train/openai/v1/chat/completions"
# Clean and violating items in turn: the governed tap removes every second call. CLEAN: the
# same sizes, nothing to stop (the answer passes unchanged: no re-encoding).
MIX = ("informative", "clickbait", "balanced", "personal_data")
CLEAN = ("informative", "balanced", "informative", "balanced")
STYLE = {s.name: s for s in STYLES}


def tool_calls(n: int, styles: tuple[str, ...]) -> list[dict[str, Any]]:
    calls = []
    for i in range(n):
        item = item_for(STYLE[styles[i % len(styles)]], f"topic {i}")
        args = {"style": item["kind"], "headline": item["params"]["headline"],
                "text": item["text"], "sources": item["sources"]}
        calls.append({"id": f"call_{i}", "type": "function",
                      "function": {"name": "publish", "arguments": json.dumps(args)}})
    return calls


def completion(calls: int, tokens: int, styles: tuple[str, ...] = MIX) -> dict[str, Any]:
    """A chat completion as vLLM gives it with `logprobs` and `return_token_ids`."""
    logprobs = [{"token": f"tok{i}", "logprob": -0.01 * (i % 97), "bytes": [116, 111, 107],
                 "top_logprobs": []} for i in range(tokens)]
    return {"id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": MODEL,
            "prompt_token_ids": list(range(100_000, 100_000 + tokens // 2)),
            "choices": [{"index": 0, "finish_reason": "tool_calls",
                         "token_ids": list(range(tokens)),
                         "message": {"role": "assistant", "content": None,
                                     "tool_calls": tool_calls(calls, styles)},
                         "logprobs": {"content": logprobs}}],
            "usage": {"prompt_tokens": tokens // 2, "completion_tokens": tokens,
                      "total_tokens": tokens + tokens // 2}}


def request_body() -> dict[str, Any]:
    return {"model": "whatever", "user": "agent-1", "messages": [
        {"role": "system", "content": "You publish items for a news feed. " * 20},
        {"role": "user", "content": "Plan the next items of this rollout."}],
        "tools": [{"type": "function", "function": {
            "name": "publish", "description": "Publish one item.",
            "parameters": {"type": "object", "properties": {
                "style": {"type": "string"}, "headline": {"type": "string"},
                "text": {"type": "string"},
                "sources": {"type": "array", "items": {"type": "string"}}}}}}]}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def proxy_round(stub: StubModelServer, n: int, warmup: int, govern: bool, wal: bool,
                calls: int) -> tuple[list[float], int]:
    """One tap, `warmup + n` completions; (latencies in µs, calls the agent got back)."""
    governance = GatewayGovernance() if govern else None
    with tempfile.TemporaryDirectory(prefix="tw-bench-witness-") as tmp:
        config = server_config(host="127.0.0.1", port=0, key=KEY)
        config["default_proxy"]["model_name"] = MODEL
        tap = GatewayTap(lambda records: None, config=config, govern=governance,
                         wal_dir=Path(tmp) / "wal" if wal else None)
        with tap, httpx.Client(base_url=tap.url, timeout=30,
                               headers={"Authorization": f"Bearer {KEY}"}) as c:
            c.post("/api/models", json=[{"model": MODEL, "endpoint": stub.base_url}]
                   ).raise_for_status()
            c.post("/api/rollouts", json=[{"input": {}, "rollout_id": "bench"}]
                   ).raise_for_status()
            url, body = PROXY.format(rid="bench"), request_body()
            out: list[float] = []
            got = 0
            for i in range(warmup + n):
                t0 = time.perf_counter_ns()
                r = c.post(url, json=body)
                elapsed = (time.perf_counter_ns() - t0) / 1000
                r.raise_for_status()
                if i >= warmup:
                    out.append(elapsed)
                    got += len(r.json()["choices"][0]["message"].get("tool_calls") or [])
    if governance is not None and governance.stats.calls != (warmup + n) * calls:
        raise SystemExit(f"error: governed {governance.stats.calls} calls, expected "
                         f"{(warmup + n) * calls}")
    return out, got


def extraction(event: dict[str, Any], repeat: int, inner: int = 200) -> tuple[float, float, int]:
    """(µs per witnessed_actions, µs per json.loads of the event, witnessed calls)."""
    text = json.dumps(event)
    found = len(witnessed_actions(event, event_id="r:0:model_request:0", rollout_id="r",
                                  position=0, ts=0.0))
    extract, parse = [], []
    for _ in range(repeat):
        t0 = time.perf_counter_ns()
        for _ in range(inner):
            witnessed_actions(event, event_id="r:0:model_request:0", rollout_id="r",
                              position=0, ts=0.0)
        extract.append((time.perf_counter_ns() - t0) / 1000 / inner)
        t0 = time.perf_counter_ns()
        for _ in range(inner // 10):
            json.loads(text)
        parse.append((time.perf_counter_ns() - t0) / 1000 / (inner // 10))
    return statistics.median(extract), statistics.median(parse), found


def quiet_agent_lightning() -> None:
    """As the command does (cli/app.py): Agent Lightning's structlog lines, warnings only;
    its debug line per proxied call would be timed too."""
    import logging

    import structlog

    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
                        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls-n", type=int, default=300, help="timed completions per round")
    ap.add_argument("--warmup", type=int, default=20, help="untimed completions per round")
    ap.add_argument("--rounds", type=int, default=3, help="plain/governed rounds, alternating")
    ap.add_argument("--calls", type=int, default=4, help="tool calls per completion")
    ap.add_argument("--tokens", type=int, default=1000, help="completion tokens (logprobs)")
    ap.add_argument("--repeat", type=int, default=15, help="timings of the extraction")
    ap.add_argument("--no-wal", dest="wal", action="store_false",
                    help="taps without their write-ahead log (the command always has one)")
    args = ap.parse_args()
    if min(args.calls_n, args.rounds, args.calls, args.tokens, args.repeat) < 1 \
            or args.warmup < 0:
        print("error: every count must be >= 1 (--warmup >= 0)", file=sys.stderr)
        return 2
    quiet_agent_lightning()
    answer = completion(args.calls, args.tokens)
    clean = completion(args.calls, args.tokens, CLEAN)
    load_before = os.getloadavg()[0]
    # name: (governed, the stub's answer, latencies, tool calls the agent got back)
    variants: dict[str, tuple[bool, dict[str, Any], list[float], list[int]]] = {
        "gateway": (False, answer, [], []),
        "gateway --govern": (True, answer, [], []),
        "--govern, none stopped": (True, clean, [], [])}
    serving = {"answer": answer}
    with StubModelServer(respond=lambda body: serving["answer"]) as stub:
        for _ in range(args.rounds):
            for govern, given, times, got in variants.values():
                serving["answer"] = given
                lat, n = proxy_round(stub, args.calls_n, args.warmup, govern, args.wal,
                                     args.calls)
                times.extend(lat)
                got.append(n)
    plain, governed, unchanged = (v[2] for v in variants.values())
    event = {"model": MODEL, "model_version": 0, "request": request_body(), "response": answer,
             "latency_ms": 4.2, "http_status": 200, "status": "ok", "retry_count": 0,
             "usage": answer["usage"], "finish_reason": "tool_calls"}
    event_kb = len(json.dumps(event)) / 1000
    extract_us, parse_us, found = extraction(event, args.repeat)

    p50, p99 = statistics.median(plain), pct(plain, 0.99)
    g50, g99 = statistics.median(governed), pct(governed, 0.99)
    u50 = statistics.median(unchanged)
    total = args.rounds * args.calls_n
    print(f"proxy latency per completion ({total} per variant over {args.rounds} alternating "
          f"rounds, {args.calls} tool calls and {args.tokens} logprob tokens each, "
          f"{event_kb:.0f} KB event; write-ahead log {'on' if args.wal else 'off'})")
    print(f"{'':26}{'p50':>10}{'p90':>10}{'p99':>10}{'calls back':>12}   (microseconds)")
    for name, (_, _, v, got) in variants.items():
        print(f"{name:26}{statistics.median(v):>10.0f}{pct(v, .9):>10.0f}{pct(v, .99):>10.0f}"
              f"{sum(got):>7}/{total * args.calls}")
    print(f"govern / proxy: p50 {g50 / p50:.2f}x (+{g50 - p50:.0f} us per completion, half "
          f"its calls stopped: parse, checks, re-encode); none stopped {u50 / p50:.2f}x "
          f"(+{u50 - p50:.0f} us: parse and checks)")
    print(f"extraction: witnessed_actions {extract_us:.1f} us per model_request event "
          f"({found} calls); json.loads of the event {parse_us:.0f} us")
    print(f"machine: {os.cpu_count()} CPUs, load average {load_before:.2f} at start, "
          f"{os.getloadavg()[0]:.2f} at the end")
    last_line({"proxy_p50_us": p50, "proxy_p99_us": p99, "govern_p50_us": g50,
               "govern_p99_us": g99, "govern_ratio": g50 / p50, "govern_unchanged_p50_us": u50,
               "extract_us": extract_us,
               "parse_us": parse_us, "event_kb": event_kb, "calls_per_completion": args.calls,
               "completions": total, "wal": args.wal})
    return 0


if __name__ == "__main__":
    sys.exit(main())
