"""Prometheus alerting and recording rules, evaluated on the stream."""

from detector.rules.alerting import Alert, AlertingRule
from detector.rules.engine import EngineOutput, RuleEngine
from detector.rules.files import load_rule_files
from detector.rules.group import RuleGroup
from detector.rules.recording import RecordingRule

__all__ = ["Alert", "AlertingRule", "EngineOutput", "RecordingRule", "RuleEngine", "RuleGroup", "load_rule_files"]
