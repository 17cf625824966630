"""Random templates render as promtool renders them.

Hypothesis builds templates from Go template pieces (actions, variables,
pipelines, builtins, Prometheus's functions, query, constants of every kind,
ill-typed calls that fail at run time) and random sample values (NaN, ±Inf,
-0, tiny and huge numbers); each batch runs through ``promtool test rules``
once (see ``promtool_renders`` in test_templates) and through Headroom, and
every rendered text must be equal. No shrinking: each example costs a promtool
run, and the report lists the templates that differ.
"""

from __future__ import annotations

import math

from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from tests.unit.test_templates import promtool_renders, render

# Operands of each kind, as template source.
# Prometheus orders query results as its index does, which changes from run to run (and prints a
# result as pointers): queries here give one sample, or are sorted, or only counted.
FLOATS = ["$value", ".Value", "1.5", "-0.25", "1e6", "(query \"up{job='db'}\" | first | value)", "(parseDuration \"90s\")"]
INTS = ["1", "0", "-3", "0x1F", "'a'", "(len $labels)", "(len (query \"up\"))"]
STRINGS = ["$labels.job", "$labels.instance", ".Labels.text", '"a b"', "`raw\\n`", '"<x&y>"', "$labels.missing",
           '(index $labels "job")', "(toUpper $labels.job)", '(printf "%.1f" $value)']
OTHERS = ["$labels", "$externalLabels", "true", "nil", "(args 1 \"x\")", "(safeHtml \"<b>\")",
          "(query \"up{job='db'}\" | first)", "."]
ANY_OPERAND = FLOATS + INTS + STRINGS + OTHERS

VERBS = ["%v", "%d", "%s", "%.2f", "%5.1f", "%q", "%x", "%t", "%T", "%e", "%g", "%-6v|", "%08.3f", "%+d", "%%"]


def operand(kinds: list[str] = ANY_OPERAND) -> st.SearchStrategy[str]:
    return st.sampled_from(kinds)


@st.composite
def call(draw: st.DrawFn) -> str:
    """One pipeline: a function applied to operands, well or ill typed."""
    choice = draw(st.integers(0, 13))
    any_op = operand()
    if choice == 0:
        fmt = "".join(draw(st.lists(st.sampled_from(VERBS), min_size=1, max_size=3)))
        args = draw(st.lists(any_op, max_size=3))
        return f'printf "{fmt}" ' + " ".join(args)
    if choice == 1:
        fn = draw(st.sampled_from(["humanize", "humanize1024", "humanizeDuration", "humanizePercentage", "humanizeTimestamp"]))
        return f"{fn} {draw(operand(FLOATS + INTS + STRINGS))}"
    if choice == 2:
        fn = draw(st.sampled_from(["eq", "ne", "lt", "le", "gt", "ge"]))
        return f"{fn} {draw(any_op)} {draw(any_op)}"
    if choice == 3:
        fn = draw(st.sampled_from(["and", "or"]))
        return f"{fn} " + " ".join(draw(st.lists(any_op, min_size=1, max_size=3)))
    if choice == 4:
        return f"not {draw(any_op)}"
    if choice == 5:
        return f"len {draw(any_op)}"
    if choice == 6:
        return f"index {draw(any_op)} {draw(any_op)}"
    if choice == 7:
        fn = draw(st.sampled_from(["toUpper", "toLower", "title", "stripPort", "stripDomain", "urlquery", "html", "js"]))
        return f"{fn} {draw(any_op)}"
    if choice == 8:
        pattern = draw(st.sampled_from(['"(.*):(.*)"', '"[aeiou]"', '"b*"', '"^"', '"(?P<h>[a-z]+)"']))
        repl = draw(st.sampled_from(['"$1"', '"<$2>"', '"${h}-"', '"x"', '"$$"']))
        return f"reReplaceAll {pattern} {repl} {draw(any_op)}"
    if choice == 9:
        return f"{draw(any_op)} | printf \"{draw(st.sampled_from(VERBS))}\""
    if choice == 10:
        return f"print " + " ".join(draw(st.lists(any_op, max_size=3)))
    if choice == 11:
        return f"match \"{draw(st.sampled_from(['^a', 'api', '[0-9]+']))}\" {draw(any_op)}"
    if choice == 12:
        return f"slice {draw(any_op)} {draw(operand(INTS))}"
    return draw(any_op)


@st.composite
def template(draw: st.DrawFn, depth: int = 0) -> str:
    """Text and actions: a printed pipeline, if/else, with/else, range/else, or a variable."""
    parts = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.integers(0, 5 if depth < 2 else 0))
        if kind == 0:
            parts.append(f"{{{{ {draw(call())} }}}}")
        elif kind == 1:
            inner = draw(template(depth + 1))
            other = draw(st.one_of(st.just(""), template(depth + 1)))
            parts.append(f"{{{{ if {draw(call())} }}}}{inner}" + (f"{{{{ else }}}}{other}" if other else "") + "{{ end }}")
        elif kind == 2:
            parts.append(f"{{{{ with {draw(call())} }}}}[{{{{ . }}}}]{{{{ else }}}}none{{{{ end }}}}")
        elif kind == 3:
            source = draw(st.sampled_from(["$labels", '(query "up{job=\'db\'}")', "$externalLabels", '(query "up == 7")', "$value",
                                           '(sortByLabel "instance" (query "up"))']))
            body = draw(st.sampled_from(["{{ $k }}={{ $v }};", "{{ $k }}:{{ $v | printf \"%v\" }},"]))
            parts.append(f"{{{{ range $k, $v := {source} }}}}{body}{{{{ else }}}}empty{{{{ end }}}}")
        elif kind == 4:
            parts.append(f"{{{{ $x := {draw(call())} }}}}<{{{{ $x }}}}>")
        else:
            parts.append(draw(st.sampled_from(["a ", " - ", "{{- \" trim \" -}}", "{{/* c */}}", "\n"])))
    return "".join(parts)


def value_text(v: float) -> str:
    """A float in promtool's series notation."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "Inf" if v > 0 else "-Inf"
    return repr(v)


VALUES = st.one_of(
    st.sampled_from([0.0, -0.0, 1.0, 0.5, 1234567.0, 1e-7, 1e21, -42.25, math.nan, math.inf, -math.inf]),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
)


@settings(max_examples=6, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(cases=st.lists(st.tuples(VALUES, template()), min_size=40, max_size=40))
def test_random_templates_render_as_in_promtool(cases, tmp_path_factory):
    cases = [(value_text(v), t) for v, t in cases]
    theirs = promtool_renders(cases, tmp_path_factory.mktemp("templates"))
    wrong = [(t, v, p, render(v, t)) for (v, t), p in zip(cases, theirs) if render(v, t) != p]
    assert not wrong, "\n".join(f"{t!r} value={v}\n  promtool: {p!r}\n  headroom: {h!r}" for t, v, p, h in wrong[:5])
