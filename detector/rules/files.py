"""Loading Prometheus rule files, unmodified, and reporting every problem at once.

The format is Prometheus's: ``groups`` of ``name``, ``interval``, ``limit`` and
``rules``; alerting rules (``alert``, ``expr``, ``for``, ``keep_firing_for``,
``labels``, ``annotations``) and recording rules (``record``, ``expr``,
``labels``). The YAML is read as Prometheus 2.42 reads it (go-yaml v3, see
:mod:`detector.go_yaml`): anchors, aliases and ``<<`` merge keys resolved,
repeated keys refused, every scalar kept as its text, ``null`` the zero value,
only the first document of a multi-document file.

Everything is checked before anything runs. A rule Headroom cannot evaluate
exactly (an expression or template it does not support), or one Prometheus
would refuse too, is *refused*: reported with file, group, rule and reason,
and left out, while the file's other rules load (:func:`load_rules`). With
``strict``, a refused rule refuses its whole file instead, as Prometheus
refuses a file with one bad rule; :func:`load_rule_files` is strict by default
(``headroom test-rules`` stays strict, like promtool). A file that cannot be
read as a rule file at all (not YAML, no ``groups``, a bad group) is always
refused.

>>> import tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "r.yml")
>>> _ = open(path, "w").write('''
... groups:
...   - name: g
...     rules:
...       - alert: High
...         expr: sin(x) > 1
...       - alert: Up
...         expr: up == 1
...         for: 5x
...       - alert: Down
...         expr: up == 0
... ''')
>>> rules = load_rules([path])
>>> [r.name for g in rules.groups for r in g.rules]
['Down']
>>> [(r.index, r.name, r.invalid) for r in rules.refused]  # invalid: Prometheus refuses it too
[(1, 'High', False), (2, 'Up', True)]
>>> load_rule_files([path])
Traceback (most recent call last):
...
detector.errors.RuleError: 2 problem(s) in rule files:
  ...r.yml: group 'g', rule 1 'High', field 'expr': function sin() is not supported yet, in: sin(x) > 1
  ...r.yml: group 'g', rule 2 'Up', field 'for': not a duration: '5x' (use units y, w, d, h, m, s, ms, e.g. '5m' or '1h30m')
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from detector.durations import parse_duration
from detector.errors import RuleError
from detector.go_yaml import Decoder
from detector.promql import InvalidExpression, UnsupportedExpression, compile_expr
from detector.rules.alerting import AlertingRule
from detector.rules.group import Rule, RuleGroup
from detector.rules.recording import RecordingRule
from detector.output.templates import Template, TemplateError

DEFAULT_INTERVAL_MS = 15_000
_GROUP_FIELDS = {"name", "interval", "limit", "rules"}
_ALERT_FIELDS = {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
_RECORD_FIELDS = {"record", "expr", "labels"}
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_GO_TEMPLATE_ERRORS = ("template: ", "unclosed action", "empty action")
_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


@dataclass(frozen=True)
class RefusedRule:
    """A rule left out of its group: where it is, and why.

    ``invalid`` when Prometheus refuses it too (``promtool check rules`` fails
    its file); otherwise Prometheus would run it and only Headroom cannot.
    """

    source: str
    group: str
    index: int  # position in its group, from 1
    name: str
    problems: tuple[str, ...]  # each names file, group, rule and field
    invalid: bool


@dataclass
class FileReport:
    """What one rule file gave: its groups (refused rules left out), the refused rules, and the
    problems that refuse the file itself (``problems``: promtool refuses such a file too)."""

    path: str
    groups: list[RuleGroup] = field(default_factory=list)
    refused: list[RefusedRule] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    rules_found: int = 0  # every rule written in the file, loaded or refused (promtool's count)
    all_problems: list[str] = field(default_factory=list)  # file, group and rule problems, in file order

    @property
    def invalid(self) -> bool:
        """Whether Prometheus refuses this file (its ``promtool check rules`` fails)."""
        return bool(self.problems) or any(r.invalid for r in self.refused)


@dataclass
class RuleFiles:
    """The result of :func:`load_rules`: a report per file, and the groups to run."""

    files: list[FileReport]
    strict: bool = False

    @property
    def groups(self) -> list[RuleGroup]:
        """The groups to run; when strict, none of a file with a refused rule."""
        return [g for f in self.files if not (self.strict and f.refused) for g in f.groups]

    @property
    def refused(self) -> list[RefusedRule]:
        return [r for f in self.files for r in f.refused]

    def errors(self) -> list[str]:
        """What keeps the files from loading: files unreadable as rule files, and when strict, every refused rule."""
        if self.strict:
            return [p for f in self.files if f.problems or f.refused for p in f.all_problems]
        return [p for f in self.files for p in f.problems]

    def checked(self) -> list[RuleGroup]:
        """:attr:`groups`, or :class:`RuleError` listing :meth:`errors` if there are any."""
        errors = self.errors()
        if errors:
            raise RuleError(errors)
        return self.groups


def load_rules(
    paths: Iterable[str | Path],
    *,
    default_interval_ms: int = DEFAULT_INTERVAL_MS,
    external_labels: Mapping[str, str] | None = None,
    external_url: str = "",
    strict: bool = False,
) -> RuleFiles:
    """Read, validate and compile rule files (or packs, by name), refusing rules one by one (see the module doc)."""
    files = []
    for name in paths:
        try:
            path = resolve_rule_file(name)
        except RuleError as exc:
            files.append(FileReport(str(name), problems=exc.problems, all_problems=exc.problems))
            continue
        files.append(_load_file(path, default_interval_ms, dict(external_labels or {}), external_url))
    return RuleFiles(files, strict)


def load_rule_files(
    paths: Iterable[str | Path],
    *,
    default_interval_ms: int = DEFAULT_INTERVAL_MS,
    external_labels: Mapping[str, str] | None = None,
    external_url: str = "",
    strict: bool = True,
) -> list[RuleGroup]:
    """The groups of :func:`load_rules`; :class:`RuleError` lists every problem that stops loading
    (when strict, the default, any problem at all)."""
    return load_rules(
        paths, default_interval_ms=default_interval_ms, external_labels=external_labels, external_url=external_url, strict=strict
    ).checked()


class _Problems:
    """Problems of one file, in file order; rule problems say whether Prometheus refuses them too."""

    def __init__(self, report: FileReport) -> None:
        self.report = report
        self.rule: list[tuple[str, bool]] | None = None  # the rule being read, if any

    def add(self, message: str, invalid: bool = True) -> None:
        self.report.all_problems.append(message)
        if self.rule is not None:
            self.rule.append((message, invalid))
        else:
            self.report.problems.append(message)


def _load_file(path: Path, default_interval_ms: int, external: dict[str, str], external_url: str) -> FileReport:
    report = FileReport(str(path))
    problems = _Problems(report)
    try:
        text = path.read_text()
    except OSError as exc:
        problems.add(f"{path}: cannot read: {exc.strerror}")
        return report
    except UnicodeDecodeError as exc:
        problems.add(f"{path}: not valid YAML: {exc}")
        return report
    decoder = Decoder()
    try:
        # Like go-yaml's Decoder, only the first document is read.
        root = next(yaml.compose_all(text, Loader=yaml.SafeLoader), None)
    except yaml.YAMLError as exc:
        problems.add(f"{path}: not valid YAML: {exc}")
        return report
    if decoder.is_null(root):
        return report
    top = _fields(decoder, root, f"{path}", problems) if isinstance(root, yaml.MappingNode) else None
    if top is None or set(top) - {"groups"}:
        extra = sorted(set(top) - {"groups"}) if top is not None else []
        problems.add(f"{path}: a rule file is a mapping with only 'groups'" + (f"; unknown {extra}" if extra else ""))
        return report
    seen: set[str] = set()
    for number, node in enumerate(_items(decoder, top.get("groups"), f"{path}, field 'groups'", problems), start=1):
        where = f"{path}: group {number}"
        raw = _fields(decoder, node, where, problems) if isinstance(node, yaml.MappingNode) else None
        if raw is None:
            problems.add(f"{where}: a group is a mapping")
            continue
        name = _text(decoder, raw.get("name"))
        if not name:
            problems.add(f"{where}: field 'name': missing or empty")
            continue
        where = f"{path}: group {name!r}"
        if name in seen:
            problems.add(f"{where}: the group name is repeated in the same file")
        seen.add(name)
        for extra in sorted(set(raw) - _GROUP_FIELDS):
            problems.add(f"{where}: unknown field {extra!r}")
        interval = default_interval_ms
        if not decoder.is_null(raw.get("interval")):
            interval = _duration(decoder, raw["interval"], f"{where}, field 'interval'", problems) or default_interval_ms
        limit = _text(decoder, raw.get("limit")) or "0"
        if not re.fullmatch(r"[-+]?[0-9]+", limit):
            problems.add(f"{where}, field 'limit': must be an integer, got {limit}")
            limit = "0"
        rules = []
        for i, spec in enumerate(_items(decoder, raw.get("rules"), f"{where}, field 'rules'", problems), start=1):
            report.rules_found += 1
            problems.rule = []
            rule_name = ""
            try:
                rule, rule_name = _load_rule(
                    decoder, spec, f"{where}, rule {i}", name, str(path), external, external_url, default_interval_ms, problems
                )
            finally:
                found, problems.rule = problems.rule, None
            if found:
                messages = tuple(m for m, _ in found)
                report.refused.append(RefusedRule(str(path), name, i, rule_name, messages, any(bad for _, bad in found)))
            elif rule is not None:
                rules.append(rule)
        # Prometheus takes a limit of 0 or less as none.
        report.groups.append(RuleGroup(name, str(path), interval, tuple(rules), max(0, int(limit))))
    return report


def _fields(decoder: Decoder, node: yaml.MappingNode, where: str, problems: _Problems) -> dict[str, yaml.Node]:
    """A mapping's keys (merge keys expanded) and value nodes; a key written twice is a problem, as in go-yaml."""
    out: dict[str, yaml.Node] = {}
    lines: dict[str, int] = {}
    start = len(decoder.errors)
    for key, value, merged in decoder.pairs(node):
        name = key.value if isinstance(key, yaml.ScalarNode) else str(key.value)
        if name in out:
            if not merged:
                problems.add(f"{where}: mapping key {name!r} already defined at line {lines[name]}")
            continue
        out[name], lines[name] = value, key.start_mark.line + 1
    for message in decoder.errors[start:]:
        problems.add(f"{where}: {message}")
    return out


def _items(decoder: Decoder, node: yaml.Node | None, where: str, problems: _Problems) -> list[yaml.Node]:
    if decoder.is_null(node):
        return []
    if not isinstance(node, yaml.SequenceNode):
        problems.add(f"{where}: must be a list")
        return []
    return list(node.value)


def _text(decoder: Decoder, node: yaml.Node | None) -> str | None:
    """A scalar's text as Go reads it into a string ("" for null); None for a list or mapping."""
    if decoder.is_null(node):
        return ""
    return node.value if isinstance(node, yaml.ScalarNode) else None


def _node_text(node: yaml.Node | None) -> str | None:
    """The text of a field Prometheus keeps as a YAML node (alert, record, expr): ``Null`` is the name "Null"."""
    if node is None:
        return ""
    return node.value if isinstance(node, yaml.ScalarNode) else None


def _load_rule(
    decoder: Decoder, node: yaml.Node, where: str, group: str, source: str, external: dict[str, str], external_url: str,
    default_interval_ms: int, problems: _Problems,
) -> tuple[Rule | None, str]:
    spec = _fields(decoder, node, where, problems) if isinstance(node, yaml.MappingNode) else None
    if spec is None:
        problems.add(f"{where}: a rule is a mapping")
        return None, ""
    is_alert, is_record = "alert" in spec, "record" in spec
    if is_alert == is_record:
        problems.add(f"{where}: a rule needs exactly one of 'alert' or 'record'")
        return None, ""
    name = _node_text(spec["alert"] if is_alert else spec["record"])
    where = f"{where} {name!r}"
    for extra in sorted(set(spec) - (_ALERT_FIELDS if is_alert else _RECORD_FIELDS)):
        problems.add(f"{where}: field {extra!r} is not allowed in {'an alerting' if is_alert else 'a recording'} rule")
    if not name:
        problems.add(f"{where}: field '{'alert' if is_alert else 'record'}': missing or empty")
    elif is_record and not _METRIC_NAME.match(name):
        problems.add(f"{where}: field 'record': {name!r} is not a valid metric name")
    expr_text = _node_text(spec.get("expr"))
    expr = None
    if not expr_text or not expr_text.strip():
        problems.add(f"{where}: field 'expr': missing or empty")
    else:
        try:
            # As Prometheus runs it: from its printed form, x[5m:] at the global evaluation interval.
            expr = compile_expr(expr_text, as_rule=True, subquery_step_ms=default_interval_ms)
        except UnsupportedExpression as exc:
            # Only a parse error is Prometheus's refusal too; the rest is what Headroom does not evaluate.
            problems.add(f"{where}, field 'expr': {exc}", invalid=isinstance(exc, InvalidExpression))
    labels = _mapping(decoder, spec.get("labels"), f"{where}, field 'labels'", problems)
    _check_names(labels, f"{where}, field 'labels'", problems)
    if not is_alert:
        if problems.rule or expr is None or not name:
            return None, name or ""
        return RecordingRule(name, expr, expr_text, tuple(sorted(labels.items())), group, source), name
    annotations = _mapping(decoder, spec.get("annotations"), f"{where}, field 'annotations'", problems)
    _check_names(annotations, f"{where}, field 'annotations'", problems)
    label_templates = _templates(labels, f"{where}, field 'labels'", problems, name)
    annotation_templates = _templates(annotations, f"{where}, field 'annotations'", problems, name)
    for_ms = _duration(decoder, spec.get("for"), f"{where}, field 'for'", problems)
    keep_ms = _duration(decoder, spec.get("keep_firing_for"), f"{where}, field 'keep_firing_for'", problems)
    if problems.rule or expr is None or not name:
        return None, name or ""
    rule = AlertingRule(
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
    return rule, name


def _check_names(mapping: dict[str, str], where: str, problems: _Problems) -> None:
    for name in mapping:
        if not _LABEL_NAME.match(name):
            problems.add(f"{where}: {name!r} is not a valid label name")
        elif name == "__name__":
            problems.add(f"{where}: '__name__' cannot be set by a rule")


def _duration(decoder: Decoder, node: yaml.Node | None, where: str, problems: _Problems) -> int | None:
    """A duration field: null is zero, as in Prometheus (``for:`` with no value); "" is not a duration."""
    if decoder.is_null(node):
        return 0
    text = _text(decoder, node)
    try:
        return parse_duration(text if text is not None else "")
    except ValueError as exc:
        problems.add(f"{where}: {exc}")
        return None


def _mapping(decoder: Decoder, node: yaml.Node | None, where: str, problems: _Problems) -> dict[str, str]:
    """A map of strings; a null value is "" (which, as a rule label, removes the label)."""
    if decoder.is_null(node):
        return {}
    if not isinstance(node, yaml.MappingNode):
        problems.add(f"{where}: must be a mapping of names to strings")
        return {}
    out = {}
    for name, value in _fields(decoder, node, where, problems).items():
        text = _text(decoder, value)
        if text is None:
            problems.add(f"{where} {name!r}: must be a string, not a list or mapping")
        else:
            out[name] = text
    return out


def _templates(mapping: dict[str, str], where: str, problems: _Problems, rule: str) -> tuple[tuple[str, Template], ...]:
    out = []
    for name, text in sorted(mapping.items()):
        try:
            out.append((name, Template.parse(text, f"__alert_{rule}")))  # Prometheus's template name
        except TemplateError as exc:
            # Go's parse errors ("template: NAME:LINE: ...") are Prometheus's refusals too, as are
            # unclosed and empty actions; other template errors are features Headroom lacks.
            problems.add(f"{where} {name!r}: {exc}", invalid=str(exc).startswith(_GO_TEMPLATE_ERRORS))
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
