"""Series selectors as configuration: ``name{label="value", ...}`` text to label matchers.

Model catalogs and forecast specs name the series they apply to with a plain
PromQL instant selector: no function, operator, offset, @ or range.

>>> [(m.name, m.op, m.value) for m in parse_selector('pgmq_queue_depth{queue_name=~"o.*"}')]
[('__name__', '=', 'pgmq_queue_depth'), ('queue_name', '=~', 'o.*')]
>>> parse_selector("rate(x[5m])")
Traceback (most recent call last):
...
detector.promql.selectors.SelectorError: 'rate(x[5m])' is not a plain series selector (no functions, operators, offset or @)
"""

from __future__ import annotations

import re

from detector.errors import HeadroomError
from detector.promql.compile import UnsupportedExpression, compile_expr
from detector.promql.plan import Matcher, SelectorNode


class SelectorError(HeadroomError):
    """Text that is not a plain PromQL series selector; the message says why."""


def parse_selector(text: object) -> tuple[Matcher, ...]:
    """Matchers of a PromQL instant selector (``name{label="v", ...}``), no offset or range."""
    if not isinstance(text, str) or not text.strip():
        example = 'pgmq_queue_depth{queue_name="orders"}'
        raise SelectorError(f"expected a PromQL selector such as {example!r}, got {text!r}")
    try:
        node = compile_expr(text)
    except (UnsupportedExpression, re.error) as exc:
        raise SelectorError(f"{text!r}: {exc}") from None
    if not isinstance(node, SelectorNode) or node.offset_ms or node.at is not None:
        raise SelectorError(f"{text!r} is not a plain series selector (no functions, operators, offset or @)")
    return node.matchers
