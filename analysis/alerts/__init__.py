"""Alert rules (TOML, Prometheus names), their state machine, and notifiers."""

from .detectors import evaluate_detector
from .engine import (AlertEngine, AlertState, AlertStateStore, Evaluator, InMemoryAlertStore,
                     Notifier, Silence, Transition, evaluate_rules, exit_code, fingerprint)
from .notify import CallbackNotifier, JsonlNotifier, WebhookNotifier, webhook_bodies
from .alert_rules import (DETECTOR_PARAMS, Duration, InhibitRule, Matcher, NoData, Route,
                          AlertRule, RuleGroup, AlertRuleSet, AlertRulesError, Sample,
                          load_default_alert_rules, load_alert_rules, parse_duration,
                          parse_alert_rules)

__all__ = [
    "AlertEngine", "AlertState", "AlertStateStore", "CallbackNotifier", "DETECTOR_PARAMS",
    "Duration", "Evaluator", "InMemoryAlertStore", "InhibitRule", "JsonlNotifier", "Matcher",
    "NoData", "Notifier", "Route", "AlertRule", "RuleGroup", "AlertRuleSet", "AlertRulesError",
    "Sample",
    "Silence", "Transition", "WebhookNotifier", "evaluate_detector", "evaluate_rules",
    "exit_code", "fingerprint", "load_default_alert_rules", "load_alert_rules", "parse_duration",
    "parse_alert_rules", "webhook_bodies",
]
