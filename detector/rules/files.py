"""Loading Prometheus rule files, unmodified, and reporting every problem at once.

The format is Prometheus's: ``groups`` of ``name``, ``interval``, ``limit`` and
``rules``; alerting rules (``alert``, ``expr``, ``for``, ``keep_firing_for``,
``labels``, ``annotations``) and recording rules (``record``, ``expr``,
``labels``). Everything is checked before anything runs: a rule whose
expression or template Headroom cannot evaluate exactly is an error here,
naming file, group, rule and field, never a silent mis-evaluation.

>>> import tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "r.yml")
>>> _ = open(path, "w").write('''
... groups:
...   - name: g
...     rules:
...       - alert: High
...         expr: max_over_time(x[5m:1m]) > 1
...         for: 5x
... ''')
>>> load_rule_files([path])
Traceback (most recent call last):
...
detector.errors.RuleError: 2 problem(s) in rule files:
  ...r.yml: group 'g', rule 1 'High', field 'expr': max_over_time() of a subquery is not supported, in: max_over_time(x[5m:1m]) > 1
  ...r.yml: group 'g', rule 1 'High', field 'for': not a duration: '5x' (use units y, w, d, h, m, s, ms, e.g. '5m' or '1h30m')
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import yaml

from detector.durations import parse_duration
from detector.errors import RuleError
from detector.promql import UnsupportedExpression, compile_expr
from detector.rules.alerting import AlertingRule
from detector.rules.group import Rule, RuleGroup
from detector.rules.recording import RecordingRule
from detector.output.templates import Template, TemplateError

DEFAULT_INTERVAL_MS = 15_000
_GROUP_FIELDS = {"name", "interval", "limit", "rules"}
_ALERT_FIELDS = {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
_RECORD_FIELDS = {"record", "expr", "labels"}
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


def load_rule_files(
    paths: Iterable[str | Path],
    *,
    default_interval_ms: int = DEFAULT_INTERVAL_MS,
    external_labels: Mapping[str, str] | None = None,
    external_url: str = "",
) -> list[RuleGroup]:
    """Read, validate and compile rule files (or packs, by name); :class:`RuleError` lists every problem."""
    problems: list[str] = []
    groups: list[RuleGroup] = []
    for name in paths:
        try:
            path = resolve_rule_file(name)
        except RuleError as exc:
            problems += exc.problems
            continue
        groups.extend(_load_file(path, default_interval_ms, dict(external_labels or {}), external_url, problems))
    if problems:
        raise RuleError(problems)
    return groups


def _load_file(path: Path, default_interval_ms: int, external: dict[str, str], external_url: str, problems: list[str]) -> list[RuleGroup]:
    try:
        # BaseLoader keeps every scalar as the text written, as Prometheus's
        # YAML reader does for these string fields: `page: true` stays "true",
        # `expr: 1` is the expression "1".
        document = yaml.load(path.read_text(), Loader=yaml.BaseLoader)
    except OSError as exc:
        problems.append(f"{path}: cannot read: {exc.strerror}")
        return []
    except yaml.YAMLError as exc:
        problems.append(f"{path}: not valid YAML: {exc}")
        return []
    if document is None:
        return []
    if not isinstance(document, dict) or set(document) - {"groups"}:
        extra = sorted(set(document) - {"groups"}) if isinstance(document, dict) else []
        problems.append(f"{path}: a rule file is a mapping with only 'groups'" + (f"; unknown {extra}" if extra else ""))
        return []
    groups = []
    seen: set[str] = set()
    for number, raw in enumerate(document.get("groups") or [], start=1):
        where = f"{path}: group {number}"
        if not isinstance(raw, dict):
            problems.append(f"{where}: a group is a mapping")
            continue
        name = raw.get("name")
        if not name or not isinstance(name, str):
            problems.append(f"{where}: field 'name': missing or empty")
            continue
        where = f"{path}: group {name!r}"
        if name in seen:
            problems.append(f"{where}: the group name is repeated in the same file")
        seen.add(name)
        for extra in sorted(set(raw) - _GROUP_FIELDS):
            problems.append(f"{where}: unknown field {extra!r}")
        interval = default_interval_ms
        if raw.get("interval") is not None:
            interval = _duration(raw["interval"], f"{where}, field 'interval'", problems) or default_interval_ms
        limit = raw.get("limit") or "0"
        if not isinstance(limit, str) or not limit.isdigit():
            problems.append(f"{where}, field 'limit': must be a non-negative integer, got {limit}")
            limit = "0"

        rules = [
            rule
            for i, spec in enumerate(raw.get("rules") or [], start=1)
            if (rule := _load_rule(spec, f"{where}, rule {i}", name, str(path), external, external_url, problems)) is not None
        ]
        groups.append(RuleGroup(name, str(path), interval, tuple(rules), int(limit)))
    return groups


def _load_rule(
    spec: object, where: str, group: str, source: str, external: dict[str, str], external_url: str, problems: list[str]
) -> Rule | None:
    if not isinstance(spec, dict):
        problems.append(f"{where}: a rule is a mapping")
        return None
    is_alert, is_record = "alert" in spec, "record" in spec
    if is_alert == is_record:
        problems.append(f"{where}: a rule needs exactly one of 'alert' or 'record'")
        return None
    name = spec["alert"] if is_alert else spec["record"]
    where = f"{where} {name!r}"
    start = len(problems)
    for extra in sorted(set(spec) - (_ALERT_FIELDS if is_alert else _RECORD_FIELDS)):
        problems.append(f"{where}: field {extra!r} is not allowed in {'an alerting' if is_alert else 'a recording'} rule")
    if not isinstance(name, str) or not name:
        problems.append(f"{where}: field '{'alert' if is_alert else 'record'}': missing or empty")
    elif is_record and not _METRIC_NAME.match(name):
        problems.append(f"{where}: field 'record': {name!r} is not a valid metric name")
    expr_text = spec.get("expr")
    expr = None
    if not isinstance(expr_text, str) or not expr_text.strip():
        problems.append(f"{where}: field 'expr': missing or empty")
    else:
        try:
            expr = compile_expr(expr_text)
        except UnsupportedExpression as exc:
            problems.append(f"{where}, field 'expr': {exc}")
    labels = _mapping(spec.get("labels"), f"{where}, field 'labels'", problems)
    _check_names(labels, f"{where}, field 'labels'", problems)
    if not is_alert:
        if len(problems) > start or expr is None:
            return None
        return RecordingRule(name, expr, expr_text, tuple(sorted(labels.items())), group, source)
    annotations = _mapping(spec.get("annotations"), f"{where}, field 'annotations'", problems)
    _check_names(annotations, f"{where}, field 'annotations'", problems)
    label_templates = _templates(labels, f"{where}, field 'labels'", problems, name)
    annotation_templates = _templates(annotations, f"{where}, field 'annotations'", problems, name)
    for_ms = _duration(spec.get("for", "0s"), f"{where}, field 'for'", problems)
    keep_ms = _duration(spec.get("keep_firing_for", "0s"), f"{where}, field 'keep_firing_for'", problems)
    if len(problems) > start or expr is None:
        return None
    return AlertingRule(
        name=name,
        expr=expr,
        expr_text=expr_text,
        for_ms=for_ms or 0,
        keep_firing_for_ms=keep_ms or 0,
        labels=label_templates,
        annotations=annotation_templates,
        group=group,
        source=source,
        external_labels=external,
        external_url=external_url,
    )


def _check_names(mapping: dict[str, str], where: str, problems: list[str]) -> None:
    for name in mapping:
        if not _LABEL_NAME.match(name):
            problems.append(f"{where}: {name!r} is not a valid label name")
        elif name == "__name__":
            problems.append(f"{where}: '__name__' cannot be set by a rule")


def _duration(value: object, where: str, problems: list[str]) -> int | None:
    try:
        return parse_duration(str(value))
    except ValueError as exc:
        problems.append(f"{where}: {exc}")
        return None


def _mapping(value: object, where: str, problems: list[str]) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.append(f"{where}: must be a mapping of names to strings")
        return {}
    return {str(k): "" if v is None else str(v) for k, v in value.items()}


def _templates(mapping: dict[str, str], where: str, problems: list[str], rule: str) -> tuple[tuple[str, Template], ...]:
    out = []
    for name, text in sorted(mapping.items()):
        try:
            out.append((name, Template.parse(text, f"__alert_{rule}")))  # Prometheus's template name
        except TemplateError as exc:
            problems.append(f"{where} {name!r}: {exc}")
    return tuple(out)


RULE_PACKS = Path(__file__).resolve().parent.parent / "rulepacks"


def resolve_rule_file(name_or_path: str | Path) -> Path:
    """A rule file path, or the name of a pack shipped with Headroom (``backpressure``).

    >>> resolve_rule_file("backpressure").name
    'backpressure.yml'
    """
    path = Path(name_or_path)
    if path.exists() or path.suffix or len(path.parts) > 1:
        return path
    pack = RULE_PACKS / f"{path.name}.yml"
    if pack.exists():
        return pack
    known = ", ".join(sorted(p.stem for p in RULE_PACKS.glob("*.yml")))
    raise RuleError([f"{name_or_path}: no such rule file, and no rule pack of that name (packs: {known})"])
