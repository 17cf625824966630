"""Alert label and annotation templates, rendered as Prometheus 2.42 renders them.

Prometheus templates are Go ``text/template`` (Go 1.19) with Prometheus's
functions. This package is that language, complete for rule templates:

* :mod:`.lexer`, :mod:`.parse` -- Go's tokens, parse tree and parse errors;
* :mod:`.execute` -- Go's executor (actions, variables, pipelines, fields, calls);
* :mod:`.values`, :mod:`.gofmt` -- Go's values, their printing and ``fmt.Sprintf``;
* :mod:`.functions` -- Go's builtins and every function Prometheus 2.42 adds;
* :mod:`.template` -- :class:`Template`, a rule's template parsed once, rendered per alert.

>>> t = Template.parse('Queue {{ $labels.queue_name }} at {{ $value | printf "%.0f" }}%')
>>> t.render({"queue_name": "orders"}, 0.93 * 100)
'Queue orders at 93%'
>>> Template.parse("{{ $value }} / {{ humanize $value }} / {{ $labels }}").render({"a": "b"}, 1234567.0)
'1.234567e+06 / 1.235M / map[a:b]'
"""

from detector.output.templates.functions import (
    FUNCTIONS,
    humanize,
    humanize1024,
    humanize_duration,
    humanize_percentage,
)
from detector.output.templates.gofmt import format_labels, go_float, go_printf, go_quote
from detector.output.templates.template import QueryFunc, Template, TemplateError

__all__ = [
    "FUNCTIONS",
    "QueryFunc",
    "Template",
    "TemplateError",
    "format_labels",
    "go_float",
    "go_printf",
    "go_quote",
    "humanize",
    "humanize1024",
    "humanize_duration",
    "humanize_percentage",
]
