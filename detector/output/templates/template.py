"""An alert label or annotation template, parsed once and expanded per alert as Prometheus 2.42 does.

Prometheus expands a rule template as Go ``text/template`` source prefixed
with ``{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}``
``{{$externalURL := .ExternalURL}}{{$value := .Value}}``, named
``__alert_<rule>``, with ``missingkey=zero`` and the functions of
:mod:`~detector.output.templates.functions`. A template Go would not parse
is refused at load time (:class:`TemplateError`, Go's message); one that
fails while running expands to ``<error expanding template: ...>``, as in
Prometheus.

``query`` runs PromQL against what the engine holds at the alert's
evaluation time (the rule engine passes ``query`` to :meth:`Template.render`).
In a partitioned deployment the engine holds its partition's series (or,
for groups in the global lane, the series the lane's selectors match): a
group whose templates call ``query`` with a constant expression is placed in
the global lane with that expression's selectors (see
:mod:`detector.rules.placement`), so it sees every series the query needs;
an expression built at run time (``query (printf ...)``) cannot be known
in advance and sees only what its engine holds.

>>> t = Template.parse('{{ $labels.job }} at {{ $value | printf "%.1f" }}: {{ $labels }}', "__alert_A")
>>> t.render({"job": "api", "instance": "a:1"}, 0.25)
'api at 0.2: map[instance:a:1 job:api]'
>>> Template.parse("{{ range $k, $v := $labels }}{{ $k }}={{ $v }} {{ end }}").render({"b": "2", "a": "1"}, 1.0)
'a=1 b=2 '
>>> Template.parse('{{ with query "up" }}{{ . | first | value }}{{ else }}none{{ end }}').render(
...     {}, 1.0, query=lambda q: [((("__name__", "up"),), 3.0)])
'3'
>>> Template.parse("{{ if gt $value 1 }}x{{ end }}", "__alert_A").render({}, 2.0)
'<error expanding template: error executing template __alert_A: template: __alert_A:1:118: executing "__alert_A" at <gt $value 1>: error calling gt: incompatible types for comparison>'
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from detector.output.templates.execute import ExecError, execute
from detector.output.templates.functions import ALL_FUNCTIONS, FUNCTIONS, Expansion
from detector.output.templates.parse import (
    CommandNode, IdentifierNode, ListNode, Node, ParseError, StringNode, TextNode, parse,
)
from detector.output.templates.values import AlertData, GoMap


class TemplateError(ValueError):
    """A template Prometheus would refuse to load (Go's parse error)."""


# What Prometheus puts before every rule template (rules/alerting.go), joined without separators.
DEFINITIONS = (
    "{{$labels := .Labels}}",
    "{{$externalLabels := .ExternalLabels}}",
    "{{$externalURL := .ExternalURL}}",
    "{{$value := .Value}}",
)
_PREFIX = "".join(DEFINITIONS)
_VARIABLES = ("$labels", "$externalLabels", "$externalURL", "$value")

QueryFunc = Callable[[str], Iterable[tuple[Sequence[tuple[str, str]], float]]]
"""Runs a PromQL expression at the evaluation time: (label pairs, value) per sample; raises on error."""


@dataclass(frozen=True, eq=False)
class Template:
    """A parsed template (the Go trees of the prefixed source), rendered per alert."""

    source: str
    name: str = "__alert_"
    trees: dict[str, ListNode] = field(default_factory=dict, repr=False)
    text: str = field(default="", repr=False)  # what Go parses: Prometheus's definitions, then the source

    @classmethod
    def parse(cls, source: str, name: str = "__alert_") -> Template:
        """Parse as Prometheus does when it loads a rule; :class:`TemplateError` carries Go's message."""
        try:
            trees = parse(name, _PREFIX + source, FUNCTIONS)
        except ParseError as exc:
            raise TemplateError(str(exc)) from None
        except RecursionError:  # Go parses any depth; Python's stack does not
            raise TemplateError(f"template: {name}: nested too deeply for Headroom to parse") from None
        main = trees[name]
        # The definitions parse to the first four actions; rendering binds their variables directly.
        trees[name] = ListNode(main.pos, main.nodes[len(DEFINITIONS):])
        return cls(source, name, trees, _PREFIX + source)

    @property
    def parts(self) -> tuple[object, ...]:
        """The template's pieces: strings for literal text, a tree for the rest, so a template whose
        parts are all strings always renders as their concatenation (the engine matches restored
        alerts to rules by such fixed labels)."""
        return tuple(n.text if isinstance(n, TextNode) else n for n in self.trees[self.name].nodes)

    def queries(self) -> tuple[str, ...]:
        """The constant expressions this template passes to ``query`` (``{{ query "up" }}``)."""
        found = []
        for tree in self.trees.values():
            for node in _walk(tree):
                if isinstance(node, CommandNode) and len(node.args) == 2 and isinstance(node.args[0], IdentifierNode) \
                        and node.args[0].name == "query" and isinstance(node.args[1], StringNode):
                    found.append(node.args[1].value)
        return tuple(found)

    def _query_calls(self) -> int:
        return sum(isinstance(n, IdentifierNode) and n.name == "query" for t in self.trees.values() for n in _walk(t))

    def uses_query(self) -> bool:
        """Whether the template calls ``query`` at all (with a constant expression or not)."""
        return self._query_calls() > 0

    def queries_are_constant(self) -> bool:
        """Whether every ``query`` call passes a constant expression, so :meth:`queries` lists all
        the template can read (``{{ printf "up{x=%q}" .Labels.x | query }}`` is built while rendering)."""
        return self._query_calls() == len(self.queries())

    def render(
        self,
        labels: Mapping[str, str],
        value: float,
        external_labels: Mapping[str, str] | None = None,
        external_url: str = "",
        query: QueryFunc | None = None,
    ) -> str:
        """Expand for one alert; a runtime error renders as Prometheus does, in place of the whole text."""
        if "{{" not in self.source:
            return self.source
        label_map = GoMap(labels)
        external = GoMap(external_labels or {})
        data = AlertData(label_map, external, external_url, value)
        variables = (("$labels", label_map), ("$externalLabels", external), ("$externalURL", external_url), ("$value", value))
        expansion = Expansion(query, external_url)
        try:
            return execute(self.trees, self.name, data, ALL_FUNCTIONS, variables, self.text, expansion)
        except ExecError as exc:
            return f"<error expanding template: error executing template {self.name}: {exc}>"
        except Exception as exc:  # a case Headroom does not model: say so in the text, never fail the rule
            return f"<error expanding template: error executing template {self.name}: {type(exc).__name__}: {exc}>"


def _walk(node: Node) -> Iterable[Node]:
    yield node
    for value in vars(node).values():
        if isinstance(value, Node):
            yield from _walk(value)
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, Node):
                    yield from _walk(item)
