"""Witnessed actions: the tool calls an agent's model proposed, as the gateway recorded them.

Every LLM call of an agent goes through the gateway's proxy and is recorded as a `model_request`
event; the tool calls in its response are the actions the agent proposes, seen outside the
agent's code. We keep of each call only its tool name, a digest of its arguments and where it
was (rollout, the model_request's position, the call's index), never the bodies.

One digest joins the two sides: the Governor, given the tool call it governs (`tool_call=`),
records `call_digest(arguments)` in the decision's action, and the witness computes the same
from the recorded response. Arguments are canonical JSON before hashing (key order and spacing
do not matter); arguments that are not JSON are hashed as they are.

This module is part of the light SDK: standard library only.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any, Final, Mapping

# Where the Governor records the call it governed, inside the decision's action.
TOOL_KEY: Final = "tool"
CALL_DIGEST_KEY: Final = "call_digest"


def call_digest(arguments: Any) -> str:
    """The digest of a tool call's arguments (a JSON string, as OpenAI sends them, or already
    parsed): sha256 of their canonical JSON."""
    value = arguments
    if isinstance(arguments, (str, bytes)):
        try:
            value = json.loads(arguments)
        except ValueError:
            text = arguments.decode("utf-8", "replace") if isinstance(arguments, bytes) \
                else arguments
            return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()
    blob = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=str)
    return "sha256:" + hashlib.sha256(blob.encode("utf-8")).hexdigest()


def tool_call_parts(tool_call: Any) -> tuple[str, Any]:
    """(name, arguments) of an OpenAI tool call: `{"function": {"name", "arguments"}}`, or the
    flat `{"name", "arguments"}`; a pydantic/OpenAI object with the same attributes works too."""
    fn = _get(tool_call, "function")
    src = fn if fn is not None else tool_call
    name = _get(src, "name")
    if not isinstance(name, str) or not name:
        raise ValueError("tool_call: expected a function name")
    arguments = _get(src, "arguments")
    return name, "" if arguments is None else arguments


def _get(obj: Any, key: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, key, None)


def response_tool_calls(response: Any) -> list[tuple[str, Any]]:
    """The tool calls of a recorded completion, in order: (name, arguments).

    A chat completion body (`choices[0].message.tool_calls`, or the legacy `function_call`), or a
    streamed one recorded as its list of chunks (`choices[0].delta.tool_calls`, assembled by
    index: the name arrives once, the arguments in fragments). Only the first choice counts: an
    agent asking for several choices acts on one of them."""
    if isinstance(response, list):
        return _streamed(response)
    if not isinstance(response, Mapping):
        return []
    choice = _first_choice(response)
    message = choice.get("message") if choice is not None else None
    if not isinstance(message, Mapping):
        return []
    calls = message.get("tool_calls")
    out: list[tuple[str, Any]] = []
    if isinstance(calls, list):
        for call in calls:
            try:
                out.append(tool_call_parts(call))
            except ValueError:
                out.append(("", ""))  # witnessed all the same: a call without a usable name
    legacy = message.get("function_call")
    if isinstance(legacy, Mapping) and not out:
        try:
            out.append(tool_call_parts(legacy))
        except ValueError:
            out.append(("", ""))
    return out


def _first_choice(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    choices = body.get("choices")
    if not isinstance(choices, list):
        return None
    for choice in choices:
        if isinstance(choice, Mapping) and choice.get("index", 0) == 0:
            return choice
    return None


def _streamed(chunks: list[Any]) -> list[tuple[str, Any]]:
    names: dict[int, str] = {}
    args: dict[int, list[str]] = {}
    for chunk in chunks:
        choice = _first_choice(chunk) if isinstance(chunk, Mapping) else None
        delta = choice.get("delta") if choice is not None else None
        calls = delta.get("tool_calls") if isinstance(delta, Mapping) else None
        if not isinstance(calls, list):
            continue
        for call in calls:
            if not isinstance(call, Mapping):
                continue
            index = call.get("index", 0)
            index = index if isinstance(index, int) else 0
            fn = call.get("function")
            fn = fn if isinstance(fn, Mapping) else {}
            name, fragment = fn.get("name"), fn.get("arguments")
            if isinstance(name, str) and name:
                names[index] = name
            if isinstance(fragment, str):
                args.setdefault(index, []).append(fragment)
            names.setdefault(index, "")
    return [(names[i], "".join(args.get(i, []))) for i in sorted(names)]


@dataclass(slots=True)
class WitnessedAction:
    """One tool call the gateway saw in a `model_request` response."""

    witness_id: str      # the model_request's event id + "#<call index>"
    rollout_id: str
    position: int        # the model_request's position among the attempt's model_requests
    idx: int             # the call's index in the response
    tool: str
    digest: str
    ts: float
    run_id: str = ""
    agent_id: str = ""
    arm: str = ""
    round: int = 0

    def to_payload(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_payload(cls, data: Any) -> WitnessedAction:
        """From a spool line's data; a wrong field raises ValueError naming it."""
        if not isinstance(data, Mapping):
            raise ValueError("witnessed: expected an object")
        text = {k: data.get(k, "") for k in ("witness_id", "rollout_id", "tool", "digest",
                                              "run_id", "agent_id", "arm")}
        for key, value in text.items():
            if not isinstance(value, str):
                raise ValueError(f"witnessed.{key}: expected a string")
        for key in ("witness_id", "rollout_id", "digest"):
            if not text[key]:
                raise ValueError(f"witnessed.{key}: missing")
        numbers = {k: data.get(k, 0) for k in ("position", "idx", "round")}
        for key, value in numbers.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"witnessed.{key}: expected an integer >= 0")
        ts = data.get("ts")
        if isinstance(ts, bool) or not isinstance(ts, (int, float)):
            raise ValueError("witnessed.ts: expected a number")
        return cls(ts=float(ts), **text, **numbers)


def witnessed_actions(data: Any, *, event_id: str, rollout_id: str, position: int, ts: float,
                      run_id: str = "", agent_id: str = "", arm: str = "",
                      round: int = 0) -> list[WitnessedAction]:
    """The witnessed actions of one `model_request` event's data."""
    response = data.get("response") if isinstance(data, Mapping) else None
    return [WitnessedAction(f"{event_id}#{i}", rollout_id, position, i, name, call_digest(args),
                            ts, run_id, agent_id, arm, round)
            for i, (name, args) in enumerate(response_tool_calls(response))]
