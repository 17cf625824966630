"""Random templates render as promtool renders them, and random template text parses as in promtool.

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
import re
import subprocess

import yaml
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from detector.output.templates import Template, TemplateError
from detector.rule_tests.series import value_text
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


# --- Parsing: random token soup is accepted or refused as promtool check rules does, with Go's ---
# message (32,000 such texts agreed while tuning; 400 per run here).

TOKENS = ["{{", "}}", "{{- ", " -}}", " ", "if", "else", "end", "range", "with", "define", "template", "block",
          "break", "continue", "$x", "$y", ":=", "=", ",", "$labels", "$", ".Labels", ".job", ".", "(", ")", "|",
          '"s"', "`r`", "'c'", "1", "-2", "0x1F", "1e3", "1.", "printf", "len", "humanize", "nil", "true", "a",
          "\n", "/*", "*/", "{{/* c */}}", '"\\q"', "@", "}", "0x", "$labels.job", "else if"]

_ERROR_LINE = re.compile(r'^\S+: group "g", rule (\d+), "A\d+": annotation "a": (.*)$')


def promtool_check_templates(templates: list[str], tmp_path) -> list[str]:
    """For each template, promtool's parse error or "" (one alerting rule per template, one run)."""
    rules = [{"alert": f"A{i}", "expr": "up", "annotations": {"a": t}} for i, t in enumerate(templates)]
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": rules}]}, allow_unicode=True))
    run = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True)
    errors = [""] * len(templates)
    for line in (run.stdout + run.stderr).splitlines():
        if m := _ERROR_LINE.match(line):
            errors[int(m.group(1)) - 1] = m.group(2).replace(f"__alert_A{int(m.group(1)) - 1}:", "__alert_A:")
    return errors


def headroom_parse_error(template: str) -> str:
    try:
        Template.parse(template, "__alert_A")
    except TemplateError as exc:
        return str(exc)
    return ""


@settings(max_examples=4, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(templates=st.lists(st.lists(st.sampled_from(TOKENS), min_size=1, max_size=12).map("".join), min_size=100, max_size=100))
def test_random_template_text_parses_as_in_promtool(templates, tmp_path_factory):
    theirs = promtool_check_templates(templates, tmp_path_factory.mktemp("parse"))
    wrong = [(t, p, headroom_parse_error(t)) for t, p in zip(templates, theirs) if headroom_parse_error(t) != p]
    assert not wrong, "\n".join(f"{t!r}\n  promtool: {p!r}\n  headroom: {h!r}" for t, p, h in wrong[:8])
