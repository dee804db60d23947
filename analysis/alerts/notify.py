"""Notifiers: a JSONL log, an Alertmanager-compatible webhook, and a callback (the TUI).

No notifier raises into the engine or makes it wait: failures are counted (`failures`,
`last_error`) and logged, and the webhook retries on a thread of its own. `summary()` gives
each notifier's counts for the end-of-run line.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Final

from ...records.files import SecretFileError, make_dirs, open_append, read_secret
from .engine import AlertState, Transition

log = logging.getLogger(__name__)

# Alertmanager marks "no end yet" with Go's zero time.
ZERO_TIME: Final = "0001-01-01T00:00:00Z"


def rfc3339(ts: float | None) -> str:
    if ts is None:
        return ZERO_TIME
    dt = datetime.fromtimestamp(ts, tz=timezone.utc)
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonlNotifier:
    """Appends one JSON line per transition (every state change, suppressed ones included).

    The log and the folders made for it are created 0600 / 0700 (records/files.py)."""

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
            make_dirs(self.path.parent)
            # Opened per batch: log rotation by another program never leaves us writing to a
            # deleted file.
            with os.fdopen(open_append(self.path), "a", encoding="utf-8") as fh:
                fh.write(lines)
            self.written += len(transitions)
        except OSError as exc:
            self.failures += 1
            self.last_error = f"{self.path}: {exc.strerror or exc}"
            log.warning("alert log write failed", extra={"fields": {
                "path": str(self.path), "error": exc.strerror or str(exc)}})

    def summary(self) -> dict[str, Any]:
        return {"notifier": "jsonl", "path": str(self.path), "written": self.written,
                "failed": self.failures}


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

    def summary(self) -> dict[str, Any]:
        return {"notifier": "callback", "failed": self.failures}


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


def redact_url(url: str) -> str:
    """A receiver URL fit for a log line: credentials in it (user:password@, query values)
    replaced by ***, the fragment left out."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "(unparseable URL)"
    netloc = ("***@" if "@" in parts.netloc else "") + (
        f"[{host}]" if ":" in host else host) + (f":{port}" if port else "")
    query = "&".join(f"{name}=***" if value else name for name, value in
                     urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, ""))


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A 3xx is a failure: following it would hand the body and the bearer token to whoever
    the Location names. Returning None makes urllib raise the 3xx as an HTTPError."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any,
                         newurl: str) -> None:
        return None


# Worth another attempt: the receiver may be restarting or overloaded. Any other 4xx (and a
# redirect) will answer the same next time.
_RETRY_STATUS: Final = frozenset({408, 425, 429})


class _Failed(Exception):
    def __init__(self, message: str, fields: dict[str, Any], *, retry: bool) -> None:
        super().__init__(message)
        self.fields = fields
        self.retry = retry


class WebhookNotifier:
    """POSTs Alertmanager v4 webhook JSON, grouped by `group_by` labels.

    Bodies wait in a bounded queue (`max_queue`; when full the oldest is dropped and counted)
    and a thread of its own delivers them, so a slow or dead receiver never holds up alert
    evaluation. A failed delivery (connection error, timeout, 5xx, 408/425/429) is retried with
    exponential backoff, at most `max_attempts` times and `max_total_s` seconds per body; a
    redirect is never followed. Every failure is logged with the receiver (credentials in its
    URL redacted) and the status or error. `close()` delivers what is queued within a deadline.

    The bearer token comes from an environment variable or a file, read at each attempt (so a
    rotated token is picked up) and never logged, printed or kept in an error message.
    """

    def __init__(self, url: str, *, receiver: str = "tractatus-watch",
                 group_by: Sequence[str] = ("alertname",), external_url: str = "",
                 generator_url: str = "", bearer_token_env: str | None = None,
                 bearer_token_file: str | Path | None = None, timeout: float = 3.0,
                 max_queue: int = 100, max_attempts: int = 5, backoff_s: float = 0.5,
                 max_backoff_s: float = 8.0, max_total_s: float = 30.0) -> None:
        if bearer_token_env and bearer_token_file:
            raise ValueError("give bearer_token_env or bearer_token_file, not both")
        if max_queue < 1 or max_attempts < 1:
            raise ValueError("max_queue and max_attempts must be at least 1")
        self.url = url
        self.receiver = receiver
        self.group_by = tuple(group_by)
        self.external_url = external_url
        self.generator_url = generator_url
        self.bearer_token_env = bearer_token_env
        self.bearer_token_file = Path(bearer_token_file) if bearer_token_file else None
        self.timeout = timeout
        self.max_queue = max_queue
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_total_s = max_total_s
        self.sent = 0
        self.failures = 0  # bodies given up on after their attempts
        self.dropped = 0  # bodies never attempted: queue full, or still queued at close
        self.retries = 0
        self.last_error = ""
        self._safe_url = redact_url(url)
        self._opener = urllib.request.build_opener(_NoRedirects())
        self._queue: deque[dict[str, Any]] = deque()
        self._cond = threading.Condition()
        self._busy = False
        self._closing = False
        self._deadline: float | None = None  # set by close(): no attempt or wait past it
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        auth = ("env:" + self.bearer_token_env if self.bearer_token_env else
                "file:" + str(self.bearer_token_file) if self.bearer_token_file else "none")
        return (f"WebhookNotifier(url={self._safe_url!r}, receiver={self.receiver!r}, "
                f"auth={auth})")

    # --- the engine's side: never waits on the network ----------------------------------------

    def notify(self, transitions: Sequence[Transition], firing: Sequence[AlertState]) -> None:
        bodies = webhook_bodies(transitions, firing, receiver=self.receiver,
                                group_by=self.group_by, external_url=self.external_url,
                                generator_url=self.generator_url)
        for body in bodies:
            self._enqueue(body)

    def _enqueue(self, body: dict[str, Any]) -> None:
        with self._cond:
            if self._closing:
                self.dropped += 1
                log.warning("webhook notification dropped: the notifier is closed",
                            extra={"fields": {"receiver": self._safe_url}})
                return
            if len(self._queue) >= self.max_queue:
                self._queue.popleft()
                self.dropped += 1
                log.warning("webhook queue full: dropped the oldest notification",
                            extra={"fields": {"receiver": self._safe_url,
                                              "max_queue": self.max_queue,
                                              "dropped": self.dropped}})
            self._queue.append(body)
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="tw-webhook",
                                                daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every queued body was delivered or given up on; False on timeout."""
        end = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._busy:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued for up to `timeout` seconds (plus one attempt in flight), then
        stop; bodies still queued then are counted as dropped and logged."""
        with self._cond:
            if self._closing:
                return
            self._closing = True
            self._deadline = time.monotonic() + timeout
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout + self.timeout + 1.0)
        with self._cond:
            left = len(self._queue)
            self._queue.clear()
            self.dropped += left
        if left:
            log.error("webhook notifications not delivered before close", extra={"fields": {
                "receiver": self._safe_url, "dropped": left}})

    def summary(self) -> dict[str, Any]:
        return {"notifier": "webhook", "receiver": self._safe_url, "sent": self.sent,
                "failed": self.failures, "dropped": self.dropped, "retries": self.retries}

    # --- the delivery thread ------------------------------------------------------------------

    def _past_deadline(self, margin: float = 0.0) -> bool:
        return self._deadline is not None and time.monotonic() + margin >= self._deadline

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue or self._past_deadline():
                    return  # closed: close() counts what is left
                body = self._queue.popleft()
                self._busy = True
            try:
                self._deliver(body)
            except Exception as exc:  # a bug here must not silence every later alert
                self.failures += 1
                self.last_error = f"{type(exc).__name__} delivering to {self._safe_url}"
                log.error("webhook delivery crashed", extra={"fields": {
                    "receiver": self._safe_url, "error": type(exc).__name__}})
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _deliver(self, body: dict[str, Any]) -> None:
        started = time.monotonic()
        for attempt in range(1, self.max_attempts + 1):
            try:
                if attempt > 1 and self._past_deadline():
                    raise _Failed(f"closed before a retry to {self._safe_url} could be made",
                                  {"error": "closed before the next retry"}, retry=False)
                self._post(body)
            except _Failed as failed:
                delay = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
                retry = (failed.retry and attempt < self.max_attempts
                         and time.monotonic() - started + delay <= self.max_total_s
                         and not self._past_deadline(delay))
                fields = {"receiver": self._safe_url, **failed.fields, "attempt": attempt,
                          "max_attempts": self.max_attempts}
                if retry:
                    log.warning("webhook attempt failed, retrying",
                                extra={"fields": {**fields, "retry_in_s": delay}})
                    self.retries += 1
                    self._sleep(delay)
                    continue
                self.failures += 1
                self.last_error = str(failed)
                log.error("webhook notification failed", extra={"fields": fields})
                return
            self.sent += 1
            if attempt > 1:
                log.info("webhook notification delivered after retrying", extra={"fields": {
                    "receiver": self._safe_url, "attempt": attempt}})
            return

    def _sleep(self, seconds: float) -> None:
        """Wait before a retry; close() cuts the wait short at its deadline."""
        end = time.monotonic() + seconds
        with self._cond:
            while True:
                stop_at = end if self._deadline is None else min(end, self._deadline)
                left = stop_at - time.monotonic()
                if left <= 0:
                    return
                self._cond.wait(left)

    def _token(self) -> str | None:
        if self.bearer_token_env:
            token = os.environ.get(self.bearer_token_env, "").strip()
            if not token:
                raise LookupError(f"environment variable {self.bearer_token_env} is not set")
            return token
        if self.bearer_token_file:
            try:
                return read_secret(self.bearer_token_file, "token file")
            except SecretFileError as exc:
                raise LookupError(str(exc)) from None
        return None

    def _post(self, body: dict[str, Any]) -> None:
        """One attempt; raises _Failed with a message and log fields that hold no secret."""
        try:
            token = self._token()
        except LookupError as exc:
            # The file may be mid-rotation: worth another attempt.
            raise _Failed(str(exc), {"error": str(exc)}, retry=True) from None
        headers = {"Content-Type": "application/json", "User-Agent": "tractatus-watch"}
        if token:
            headers["Authorization"] = f"Bearer {token}"

        def clean(text: str) -> str:  # a receiver or resolver may echo what it was sent
            text = text.replace(self.url, self._safe_url)
            return text.replace(token, "***") if token else text

        try:
            req = urllib.request.Request(self.url, data=json.dumps(body).encode("utf-8"),
                                         headers=headers, method="POST")
            with self._opener.open(req, timeout=self.timeout) as resp:
                resp.read(65536)
        except urllib.error.HTTPError as exc:
            code = exc.code
            location = exc.headers.get("Location") if exc.headers else None
            exc.close()
            if 300 <= code < 400:
                where = redact_url(urllib.parse.urljoin(self.url, location or ""))
                to_host = urllib.parse.urlsplit(where).netloc.removeprefix("***@")
                raise _Failed(f"HTTP {code} redirect from {self._safe_url} to {to_host} (not "
                              "followed)", {"status": code, "location_host": to_host},
                              retry=False) from None
            raise _Failed(f"HTTP {code} from {self._safe_url}",
                          {"status": code, "reason": clean(str(exc.reason))},
                          retry=code >= 500 or code in _RETRY_STATUS) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise _Failed(f"{type(exc).__name__} posting to {self._safe_url}: "
                          f"{clean(str(reason))}",
                          {"error": clean(f"{type(reason).__name__}: {reason}")},
                          retry=not isinstance(exc, ValueError)) from None


__all__ = ["CallbackNotifier", "JsonlNotifier", "WebhookNotifier", "ZERO_TIME", "group_key",
           "redact_url", "rfc3339", "webhook_bodies"]
