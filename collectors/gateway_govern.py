"""Enforcement in the gateway (`tractatus-watch gateway --govern [RULES]`).

An agent with no SDK at all (a plain OpenAI client pointed at `AGL_OPENAI_BASE_URL`) is
governed architecturally: every tool call in a chat completion the LLM proxy returns is checked
by the Governor's services before the agent sees it.

The seam is Agent Lightning's `forward_request` (agentlightning/server/proxy.py), which its
proxy route looks up as a module global at call time, after it has checked the key, the
rollout and the body and chosen the model server. The tap swaps in `GatewayGovernance.wrap`
of it and puts the original back on stop, as it does with `record_event`. So the route, its
validation and its own `model_request` event (the witness: the model's unmodified response)
stay Agent Lightning's; what the wrapper adds, per proxied call:

- `stream: true` is refused before forwarding (400, an OpenAI-style error): a tool call can only
  be governed once it is complete.
- Each tool call of each choice (`message.tool_calls`, or the legacy `function_call`) becomes an
  action (`action_of`) and goes through `Governor.check(..., tool_call=call)`, so the decision
  carries the call's `call_digest`, the digest the witness computes from the recorded event.
- Each decision is recorded as a `tractatus.decision` event of the rollout, in-process through
  Agent Lightning's `record_event` (so every tap sees it, after the model_request it governs),
  with `enforced_at: "gateway"`. Round, agent and arm come from the rollout's metadata stamp;
  without one: round 0, the request's OpenAI `user` field, the configured arm.
- In enforce mode a stopped call (block, or escalate: nobody can answer an escalation in the
  middle of a completion) is removed from the response and explained in the message's
  `refusal` (and in `content` when the message has none); when no call remains, `tool_calls`
  goes and `finish_reason` becomes "stop". In shadow mode the response is the upstream's own,
  untouched (the same bytes).

Everything runs on the gateway's event loop, in the request's task, so a write-ahead log holds
the answer until the decisions are durable too. The Governor's sender is never used here: the
gateway records in-process.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, Literal

from ..governance.governor import Blocked, Governor
from ..governance.services import ActionInput, Service
from ..records.agl import RolloutContext
from ..records.events import DECISION_EVENT, Decision
from ..records.witness import tool_call_parts

log = logging.getLogger(__name__)

GovernMode = Literal["enforce", "shadow"]
GOVERN_MODES: Final[tuple[GovernMode, ...]] = ("enforce", "shadow")
ENFORCED_AT_KEY: Final = "enforced_at"
ENFORCED_AT: Final = "gateway"
STREAM_REFUSED: Final = ("streaming is refused under --govern: tool calls must be complete "
                         "before they can be governed; send the request without stream: true")
# Top-level arguments that are the action's fields rather than its text.
_NOT_TEXT: Final = frozenset({"headline", "title", "summary", "sources", "domain"})

Forward = Callable[..., Awaitable[Any]]


def _strings(value: Any) -> Iterable[str]:
    """Every string inside parsed JSON, in order."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def action_of(name: str, arguments: Any) -> ActionInput:
    """The action a tool call proposes: kind = the tool's name, params = its parsed arguments.

    The services read `text` (with the `headline`/`title` param and `summary`): it is every
    string in the arguments except those fields, so a violating phrase cannot hide in an
    argument the services would not read. `sources` and `domain` are taken as given; the
    model can never set `pre_approved` or `destructive` (it would approve itself)."""
    parsed = arguments
    if isinstance(arguments, str):
        try:
            parsed = json.loads(arguments)
        except ValueError:
            return ActionInput(kind=name, text=arguments)  # governed as the text it is
    if not isinstance(parsed, dict):
        return ActionInput(kind=name, text="\n".join(_strings(parsed)),
                           params={"arguments": parsed})
    text = "\n".join(s for k, v in parsed.items() if k not in _NOT_TEXT for s in _strings(v))
    summary, domain, sources = parsed.get("summary"), parsed.get("domain"), parsed.get("sources")
    if isinstance(sources, str):
        sources = [sources]
    return ActionInput(
        kind=name, text=text, summary=summary if isinstance(summary, str) else "",
        params=parsed, domain=domain if isinstance(domain, str) else "",
        sources=[s for s in sources if isinstance(s, str)] if isinstance(sources, list) else [])


def _call_id(call: Any) -> str:
    cid = call.get("id") if isinstance(call, dict) else None
    return cid if isinstance(cid, str) and cid else "?"


def refusal_text(call: Any, decision: Decision) -> str:
    """What the agent reads in place of a stopped call: the call, the tool and the rules."""
    return f"tool call {_call_id(call)} refused at the gateway: {Blocked(decision)}"


def openai_error(status: int, message: str, *, type_: str, code: str,
                 param: str | None = None) -> Any:
    from starlette.responses import JSONResponse

    return JSONResponse({"error": {"message": message, "type": type_, "param": param,
                                   "code": code}}, status_code=status)


@dataclass
class GovernStats:
    calls: int = 0        # tool calls governed
    stopped: int = 0      # removed from responses (enforce mode)
    unrecorded: int = 0   # decisions record_event refused (the rollout was deleted meanwhile)
    failures: int = 0     # responses that could not be governed at all


class GatewayGovernance:
    """The Governor's services on the LLM proxy's responses; see the module docstring.

    `services`: as `Governor(services=...)` (default: `default_services()`); `mode`: enforce or
    shadow; `arm`: the arm of rollouts whose stamp names none (default: governed in enforce
    mode, ungoverned in shadow, as the Governor's own)."""

    def __init__(self, services: Iterable[Service | Callable[..., Any]] | None = None, *,
                 mode: GovernMode = "enforce", arm: str | None = None) -> None:
        if mode not in GOVERN_MODES:
            raise ValueError(f"mode: expected one of {', '.join(GOVERN_MODES)}, got {mode!r}")
        self.mode = mode
        # No sink: decisions are recorded in-process (`_record`), never sent over HTTP.
        self.governor = Governor(services, mode=mode, arm=arm, agent_id="", sink=None)
        self.arm = self.governor.arm
        self.stats = GovernStats()

    def wrap(self, forward: Forward) -> Forward:
        """Agent Lightning's `forward_request`, governed."""

        async def governed_forward(*, client: Any, server: Any, body: dict[str, Any],
                                   upstream_path: str = "chat/completions", rollout_id: str,
                                   attempt_id: str, pause_state: Any = None) -> Any:
            if body.get("stream"):
                return openai_error(400, STREAM_REFUSED, type_="invalid_request_error",
                                    code="stream_refused", param="stream")
            who = self._who(rollout_id, body)  # now: the rollout may be deleted meanwhile
            response = await forward(client=client, server=server, body=body,
                                     upstream_path=upstream_path, rollout_id=rollout_id,
                                     attempt_id=attempt_id, pause_state=pause_state)
            if upstream_path != "chat/completions" or response.status_code != 200:
                return response
            return self.govern_response(response, who, rollout_id, attempt_id)

        governed_forward.__wrapped__ = forward  # type: ignore[attr-defined]
        return governed_forward

    def _who(self, rollout_id: str, body: dict[str, Any]) -> RolloutContext:
        """Round, agent and arm of the rollout's stamp, with the request's `user` as agent."""
        from agentlightning.server import store

        rollout = store._rollouts.get(rollout_id)
        meta = rollout.metadata.model_dump() if rollout is not None else {}
        who = RolloutContext.from_rollout({"rollout_id": rollout_id, "metadata": meta})
        user = body.get("user")
        who.agent_id = who.agent_id or (user if isinstance(user, str) else "")
        who.arm = who.arm or self.arm
        return who

    def govern_response(self, response: Any, who: RolloutContext, rollout_id: str,
                        attempt_id: str) -> Any:
        raw = bytes(response.body)
        if b'"tool_calls"' not in raw and b'"function_call"' not in raw:
            return response  # nothing to govern: no parse, no copy
        try:
            completion = json.loads(raw)
            changed = self.govern(completion, who, rollout_id, attempt_id)
        except Exception as exc:
            self.stats.failures += 1
            log.error("gateway: cannot govern a model response", extra={"fields": {
                "rollout_id": rollout_id, "error": f"{type(exc).__name__}: {exc}"}})
            if self.mode == "shadow":
                return response
            # Fail closed: tool calls nobody governed must not reach the agent.
            return openai_error(502, f"governance at the gateway failed: {type(exc).__name__}",
                                type_="governance_error", code="governance_failed")
        if not changed:
            return response
        from starlette.responses import Response

        # JSONResponse's own encoding, without its cycle check (parsed JSON has no cycles):
        # the same bytes in half the time, on bodies of ~100 KB with logprobs.
        body = json.dumps(completion, ensure_ascii=False, allow_nan=False, check_circular=False,
                          separators=(",", ":")).encode("utf-8")
        return Response(body, status_code=response.status_code, media_type="application/json")

    def govern(self, completion: Any, who: RolloutContext, rollout_id: str,
               attempt_id: str) -> bool:
        """Govern every tool call of every choice; in enforce mode remove the stopped ones and
        explain them. Whether the completion changed."""
        choices = completion.get("choices") if isinstance(completion, dict) else None
        changed = False
        for choice in choices if isinstance(choices, list) else ():
            message = choice.get("message") if isinstance(choice, dict) else None
            if not isinstance(message, dict):
                continue
            refusals: list[str] = []
            calls = message.get("tool_calls")
            if isinstance(calls, list) and calls:
                kept = []
                for call in calls:
                    why = self._govern_call(call, who, rollout_id, attempt_id)
                    if why is None:
                        kept.append(call)
                    else:
                        refusals.append(why)
                if refusals:
                    message["tool_calls"] = kept
            elif isinstance(message.get("function_call"), dict):
                why = self._govern_call(message["function_call"], who, rollout_id, attempt_id)
                if why is not None:
                    refusals.append(why)
                    del message["function_call"]
            if refusals:
                if not message.get("tool_calls"):
                    message.pop("tool_calls", None)
                    choice["finish_reason"] = "stop"
                text = "\n".join(refusals)
                prior = message.get("refusal")
                message["refusal"] = f"{prior}\n{text}" if isinstance(prior, str) and prior \
                    else text
                if not message.get("content"):
                    message["content"] = text
                self.stats.stopped += len(refusals)
                changed = True
        return changed

    def _govern_call(self, call: Any, who: RolloutContext, rollout_id: str,
                     attempt_id: str) -> str | None:
        """Check one call and record its decision; the refusal text if it is stopped."""
        try:
            name, arguments = tool_call_parts(call)
        except ValueError:
            # No function name: no action to govern, and nothing an agent could run.
            if self.mode == "shadow":
                return None
            return f"tool call {_call_id(call)} refused at the gateway: it names no function"
        decision = self.governor.check(action_of(name, arguments), round=who.round or 0,
                                       rollout_id=rollout_id, tool_call=call)
        decision.agent_id, decision.arm = who.agent_id, who.arm
        decision.extra[ENFORCED_AT_KEY] = ENFORCED_AT
        self.stats.calls += 1
        self._record(rollout_id, attempt_id, decision)
        return None if decision.executed else refusal_text(call, decision)

    def _record(self, rollout_id: str, attempt_id: str, decision: Decision) -> None:
        # Looked up at call time: while a tap is installed this is its recording wrapper.
        from agentlightning.server.routes import events as events_route

        try:
            events_route.record_event(rollout_id, attempt_id, DECISION_EVENT,
                                      decision.to_payload())
        except Exception as exc:  # the rollout is gone: the decision still applies
            self.stats.unrecorded += 1
            log.warning("gateway: decision not recorded", extra={"fields": {
                "rollout_id": rollout_id, "error": f"{type(exc).__name__}: {exc}"}})


__all__ = ["ENFORCED_AT", "ENFORCED_AT_KEY", "GOVERN_MODES", "GatewayGovernance", "GovernMode",
           "GovernStats", "STREAM_REFUSED", "action_of", "refusal_text"]
