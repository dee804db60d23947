"""Notifiers: a JSONL log, an Alertmanager-compatible webhook, and a callback (the TUI).

No notifier raises into the engine: failures are counted (`failures`, `last_error`) and the next
evaluation tries again.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Final

from .engine import AlertState, Transition

# Alertmanager marks "no end yet" with Go's zero time.
ZERO_TIME: Final = "0001-01-01T00:00:00Z"


def rfc3339(ts: float | None) -> str:
    if ts is None:
        return ZERO_TIME
    dt = datetime.fromtimestamp(ts, tz=timezone.utc)
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonlNotifier:
    """Appends one JSON line per transition (every state change, suppressed ones included)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.failures = 0
        self.last_error = ""
        self.written = 0

    def notify(self, transitions: Sequence[Transition], firing: Sequence[AlertState]) -> None:
        if not transitions:
            return
        lines = "".join(json.dumps(t.to_json(), sort_keys=True) + "\n" for t in transitions)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Opened per batch: log rotation by another program never leaves us writing to a
            # deleted file.
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(lines)
            self.written += len(transitions)
        except OSError as exc:
            self.failures += 1
            self.last_error = f"{self.path}: {exc.strerror or exc}"


class CallbackNotifier:
    """Calls `fn(transitions)` (e.g. the TUI posting a toast); exceptions are counted."""

    def __init__(self, fn: Callable[[list[Transition]], None], *,
                 only_notifiable: bool = False) -> None:
        self.fn = fn
        self.only_notifiable = only_notifiable
        self.failures = 0
        self.last_error = ""

    def notify(self, transitions: Sequence[Transition], firing: Sequence[AlertState]) -> None:
        items = [t for t in transitions if t.notifiable] if self.only_notifiable else list(
            transitions)
        if not items:
            return
        try:
            self.fn(items)
        except Exception as exc:
            self.failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}"


def _common(maps: list[dict[str, str]]) -> dict[str, str]:
    if not maps:
        return {}
    first = maps[0]
    return {k: v for k, v in sorted(first.items()) if all(m.get(k) == v for m in maps[1:])}


def _group_labels(labels: dict[str, str], group_by: Sequence[str]) -> dict[str, str]:
    if "..." in group_by:
        return dict(sorted(labels.items()))
    return {k: labels[k] for k in sorted(group_by) if k in labels}


def group_key(group_labels: dict[str, str]) -> str:
    """Alertmanager's groupKey shape: route matchers (none here) and the group labels."""
    inner = ", ".join(f'{k}={json.dumps(v)}' for k, v in sorted(group_labels.items()))
    return "{}:{" + inner + "}"


def _alert_body(status: str, labels: dict[str, str], annotations: dict[str, str],
                starts_at: float | None, ends_at: float | None, generator_url: str,
                fp: str) -> dict[str, Any]:
    return {
        "status": status, "labels": dict(sorted(labels.items())),
        "annotations": dict(sorted(annotations.items())),
        "startsAt": rfc3339(starts_at), "endsAt": rfc3339(ends_at) if ends_at else ZERO_TIME,
        "generatorURL": generator_url, "fingerprint": fp,
    }


def webhook_bodies(transitions: Sequence[Transition], firing: Sequence[AlertState], *,
                   receiver: str = "tractatus-watch", group_by: Sequence[str] = ("alertname",),
                   external_url: str = "", generator_url: str = "") -> list[dict[str, Any]]:
    """Alertmanager v4 webhook bodies, one per group that had a firing or resolved transition.

    Like Alertmanager, a group's body carries all its currently firing (unsuppressed) alerts plus
    the ones that just resolved; its status is "firing" while any alert in it fires.
    """
    touched: dict[str, dict[str, str]] = {}
    resolved: dict[str, list[Transition]] = {}
    for t in transitions:
        if not t.notifiable:
            continue
        gl = _group_labels(t.labels, group_by)
        key = group_key(gl)
        touched[key] = gl
        if t.to_state == "resolved":
            resolved.setdefault(key, []).append(t)
    bodies = []
    for key in sorted(touched):
        gl = touched[key]
        alerts: list[dict[str, Any]] = []
        members: list[tuple[dict[str, str], dict[str, str]]] = []
        for st in sorted(firing, key=lambda s: s.fingerprint):
            if st.suppressed or group_key(_group_labels(st.labels, group_by)) != key:
                continue
            alerts.append(_alert_body("firing", st.labels, st.annotations, st.fired_at, None,
                                      generator_url, st.fingerprint))
            members.append((st.labels, st.annotations))
        for t in sorted(resolved.get(key, []), key=lambda t: t.fingerprint):
            alerts.append(_alert_body("resolved", t.labels, t.annotations, t.starts_at,
                                      t.ends_at or t.ts, generator_url, t.fingerprint))
            members.append((t.labels, t.annotations))
        bodies.append({
            "version": "4",
            "groupKey": key,
            "truncatedAlerts": 0,
            "status": "firing" if any(a["status"] == "firing" for a in alerts) else "resolved",
            "receiver": receiver,
            "groupLabels": gl,
            "commonLabels": _common([m[0] for m in members]),
            "commonAnnotations": _common([m[1] for m in members]),
            "externalURL": external_url,
            "alerts": alerts,
        })
    return bodies


class WebhookNotifier:
    """POSTs Alertmanager v4 webhook JSON, grouped by `group_by` labels.

    The bearer token comes from an environment variable or a file, read at each send (so a
    rotated token is picked up) and never logged, printed or kept in an error message.
    """

    def __init__(self, url: str, *, receiver: str = "tractatus-watch",
                 group_by: Sequence[str] = ("alertname",), external_url: str = "",
                 generator_url: str = "", bearer_token_env: str | None = None,
                 bearer_token_file: str | Path | None = None, timeout: float = 3.0) -> None:
        if bearer_token_env and bearer_token_file:
            raise ValueError("give bearer_token_env or bearer_token_file, not both")
        self.url = url
        self.receiver = receiver
        self.group_by = tuple(group_by)
        self.external_url = external_url
        self.generator_url = generator_url
        self.bearer_token_env = bearer_token_env
        self.bearer_token_file = Path(bearer_token_file) if bearer_token_file else None
        self.timeout = timeout
        self.sent = 0
        self.failures = 0
        self.last_error = ""

    def __repr__(self) -> str:
        auth = ("env:" + self.bearer_token_env if self.bearer_token_env else
                "file:" + str(self.bearer_token_file) if self.bearer_token_file else "none")
        return f"WebhookNotifier(url={self.url!r}, receiver={self.receiver!r}, auth={auth})"

    def _token(self) -> str | None:
        if self.bearer_token_env:
            token = os.environ.get(self.bearer_token_env, "").strip()
            if not token:
                raise LookupError(f"environment variable {self.bearer_token_env} is not set")
            return token
        if self.bearer_token_file:
            try:
                token = self.bearer_token_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise LookupError(f"cannot read token file {self.bearer_token_file}: "
                                  f"{exc.strerror or exc}") from None
            if not token:
                raise LookupError(f"token file {self.bearer_token_file} is empty")
            return token
        return None

    def notify(self, transitions: Sequence[Transition], firing: Sequence[AlertState]) -> None:
        bodies = webhook_bodies(transitions, firing, receiver=self.receiver,
                                group_by=self.group_by, external_url=self.external_url,
                                generator_url=self.generator_url)
        for body in bodies:
            self._post(body)

    def _post(self, body: dict[str, Any]) -> None:
        try:
            token = self._token()
        except LookupError as exc:
            self.failures += 1
            self.last_error = str(exc)
            return
        headers = {"Content-Type": "application/json", "User-Agent": "tractatus-watch"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(self.url, data=json.dumps(body).encode("utf-8"),
                                     headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                resp.read()
            self.sent += 1
        except urllib.error.HTTPError as exc:
            self.failures += 1
            self.last_error = f"HTTP {exc.code} from {self.url}"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            self.failures += 1
            reason = getattr(exc, "reason", exc)
            self.last_error = f"{type(exc).__name__} posting to {self.url}: {reason}"


__all__ = ["CallbackNotifier", "JsonlNotifier", "WebhookNotifier", "ZERO_TIME", "group_key",
           "rfc3339", "webhook_bodies"]
