"""Alert templates render exactly as Prometheus 2.42 renders them.

Every expected string below was read from ``promtool test rules`` (Debian's
Prometheus 2.42): an alerting rule per case carries the template as an
annotation, and promtool's failure report prints what it expanded to.
``test_promtool_still_renders_every_recorded_case`` repeats that run, so the
table stays checked against the oracle.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess

import pytest
import yaml

from detector.output.templates import Template, TemplateError, go_float

LABELS = {"__name__": "m", "instance": "host:9090", "job": "api", "text": "a–b ßx"}
EXTERNAL_LABELS = {"cluster": "eu1"}

# (sample value in promtool's series notation, template, what Prometheus renders)
CONFIRMED = [
    # {{ $value }} prints like Go's fmt.Sprint(float64): %g with the shortest digits.
    ("1234567", "{{ $value }}", "1.234567e+06"),
    ("123456", "{{ $value }}", "123456"),
    ("0.00001234", "{{ $value }}", "1.234e-05"),
    ("0.5", "{{ $value }}", "0.5"),
    ("100000", "{{ $value }}", "100000"),
    ("1e6", "{{ $value }}", "1e+06"),
    ("0.0001", "{{ $value }}", "0.0001"),
    ("0.00001", "{{ $value }}", "1e-05"),
    ("123456789012", "{{ $value }}", "1.23456789012e+11"),
    ("1e300", "{{ $value }}", "1e+300"),
    ("-1234.5", "{{ $value }}", "-1234.5"),
    ("0", "{{ $value }}", "0"),
    ("-0", "{{ $value }}", "-0"),
    ("NaN", "{{ $value }}", "NaN"),
    ("Inf", "{{ $value }}", "+Inf"),
    ("-Inf", "{{ $value }}", "-Inf"),
    ("1", "{{ .Value }}", "1"),
    # humanize: SI prefixes, %.4g
    ("1234567", "{{ humanize $value }}", "1.235M"),
    ("123456", "{{ humanize $value }}", "123.5k"),
    ("0.00001234", "{{ humanize $value }}", "12.34u"),
    ("0.5", "{{ humanize $value }}", "500m"),
    ("-1234.5", "{{ humanize $value }}", "-1.234k"),
    ("-0.5", "{{ humanize $value }}", "-500m"),
    ("0", "{{ humanize $value }}", "0"),
    ("1e-30", "{{ humanize $value }}", "1e-06y"),
    ("1e300", "{{ humanize $value }}", "1e+276Y"),
    ("1e27", "{{ humanize $value }}", "1000Y"),
    ("999999", "{{ humanize $value }}", "1000k"),
    ("999.95", "{{ humanize $value }}", "1000"),
    ("NaN", "{{ humanize $value }}", "NaN"),
    ("Inf", "{{ humanize $value }}", "+Inf"),
    ("-Inf", "{{ humanize $value }}", "-Inf"),
    ("1", '{{ humanize "1234" }}', "1.234k"),
    ("1", "{{ humanize 1234 }}", "1.234k"),
    ("1", "{{ humanize -1 }}", "-1"),
    ("1", "{{ humanize 0.000001 }}", "1u"),
    # humanize1024: binary prefixes
    ("1024", "{{ humanize1024 $value }}", "1ki"),
    ("1048576", "{{ humanize1024 $value }}", "1Mi"),
    ("1536", "{{ humanize1024 $value }}", "1.5ki"),
    ("1", "{{ humanize1024 $value }}", "1"),
    ("1023", "{{ humanize1024 $value }}", "1023"),
    ("-2048", "{{ humanize1024 $value }}", "-2ki"),
    ("-1234.5", "{{ humanize1024 $value }}", "-1.206ki"),
    ("0", "{{ humanize1024 $value }}", "0"),
    ("Inf", "{{ humanize1024 $value }}", "+Inf"),
    ("1", "{{ humanize1024 1e30 }}", "8.272e+05Yi"),
    ("1", "{{ humanize1024 -1 }}", "-1"),
    ("1", "{{ humanize1024 1.5 }}", "1.5"),
    # humanizeDuration: whole units from a minute up (int64 conversion), else %.4g with a prefix
    ("1234567", "{{ humanizeDuration $value }}", "14d 6h 56m 7s"),
    ("123456", "{{ humanizeDuration $value }}", "1d 10h 17m 36s"),
    ("0.00001234", "{{ humanizeDuration $value }}", "12.34us"),
    ("0.5", "{{ humanizeDuration $value }}", "500ms"),
    ("1e21", "{{ humanizeDuration $value }}", "-106751991167300d -15h -30m -8s"),
    ("1", "{{ humanizeDuration -1e21 }}", "--106751991167300d -15h -30m -8s"),
    ("1", "{{ humanizeDuration 9.223372036854776e18 }}", "-106751991167300d -15h -30m -8s"),
    ("-1234.5", "{{ humanizeDuration $value }}", "-20m 34s"),
    ("-0.5", "{{ humanizeDuration $value }}", "-500ms"),
    ("-90", "{{ humanizeDuration $value }}", "-1m 30s"),
    ("-3661", "{{ humanizeDuration $value }}", "-1h 1m 1s"),
    ("59.9", "{{ humanizeDuration $value }}", "59.9s"),
    ("3600", "{{ humanizeDuration $value }}", "1h 0m 0s"),
    ("86400.5", "{{ humanizeDuration $value }}", "1d 0h 0m 0s"),
    ("1", "{{ humanizeDuration $value }}", "1s"),
    ("0", "{{ humanizeDuration $value }}", "0s"),
    ("1e-30", "{{ humanizeDuration $value }}", "1e-06ys"),
    ("1", "{{ humanizeDuration 0.000001 }}", "1us"),
    ("1", "{{ humanizeDuration 1e-9 }}", "1ns"),
    ("NaN", "{{ humanizeDuration $value }}", "NaN"),
    ("Inf", "{{ humanizeDuration $value }}", "+Inf"),
    # humanizePercentage
    ("1234567", "{{ humanizePercentage $value }}", "1.235e+08%"),
    ("0.5", "{{ humanizePercentage $value }}", "50%"),
    ("-1234.5", "{{ humanizePercentage $value }}", "-1.234e+05%"),
    ("0", "{{ humanizePercentage $value }}", "0%"),
    ("NaN", "{{ humanizePercentage $value }}", "NaN%"),
    ("0.25", "{{ $value | humanizePercentage }}", "25%"),
    ("1", "{{ humanizePercentage 0.123456 }}", "12.35%"),
    # printf: Go's fmt
    ("1234567", '{{ printf "%.2f" $value }}', "1234567.00"),
    ("1234567", '{{ printf "%d" $value }}', "%!d(float64=1.234567e+06)"),
    ("1234567", '{{ printf "%e" $value }}', "1.234567e+06"),
    ("1234567", '{{ printf "%E" $value }}', "1.234567E+06"),
    ("1234567", '{{ printf "%.3g" $value }}', "1.23e+06"),
    ("1234567", '{{ printf "%10.3e|" $value }}', " 1.235e+06|"),
    ("1234567", '{{ printf "%5.1f|" $value }}', "1234567.0|"),
    ("-1234.5", '{{ printf "%5.1f" $value }}', "-1234.5"),
    ("1", '{{ printf "%5.2f%%" $value }}', " 1.00%"),
    ("0.00001234", '{{ printf "%g" $value }}', "1.234e-05"),
    ("123456", '{{ printf "%g" $value }}', "123456"),
    ("0.5", '{{ printf "%.0f" $value }}', "0"),
    ("2.5", '{{ printf "%.0f" $value }}', "2"),
    ("1", '{{ printf "%v" $value }}', "1"),
    ("2.5", '{{ printf "%v|%v" $value $labels.job }}', "2.5|api"),
    ("2.5", '{{ printf "%5v|" $value }}', "  2.5|"),
    ("NaN", '{{ printf "%.2f" $value }}', "NaN"),
    ("NaN", '{{ printf "%5.1f|" $value }}', "  NaN|"),
    ("NaN", '{{ printf "%05.1f|" $value }}', "  NaN|"),
    ("Inf", '{{ printf "%.2f" $value }}', "+Inf"),
    ("Inf", '{{ printf "%+.2f" $value }}', "+Inf"),
    ("-Inf", '{{ printf "%6.1f|" $value }}', "  -Inf|"),
    ("1", '{{ printf "%s" $labels.job }}', "api"),
    ("1", '{{ printf "%q" $labels.job }}', '"api"'),
    ("1", '{{ printf "%-6s|" $labels.job }}', "api   |"),
    ("1", '{{ printf "%d" $labels.job }}', "%!d(string=api)"),
    ("1", '{{ printf "%.2f" }}', "%!f(MISSING)"),
    ("1", '{{ printf "%s" }}', "%!s(MISSING)"),
    ("1", '{{ printf "%d" 3 }}', "3"),
    ("1", '{{ printf "%v" 3 }}', "3"),
    ("1", '{{ printf "%t" 3 }}', "%!t(int=3)"),
    ("1", '{{ printf "%z" 1 }}', "%!z(int=1)"),
    ("1", '{{ printf "a" 3 }}', "a%!(EXTRA int=3)"),
    ("1", '{{ printf "%%" }}', "%"),
    ("1", '{{ printf "%+d|% d|%5d|%-5d|%05d" 3 3 3 3 3 }}', "+3| 3|    3|3    |00003"),
    ("1", '{{ printf "%.1f" $value | printf "%s!" }}', "1.0!"),
    ("1", '{{ "x" | printf "%s-%s" "a" }}', "a-x"),
    ("1", '{{ $value | printf "%.2f" | toUpper }}', "1.00"),
    # labels, fields, external labels
    ("1", "{{ $labels.job }}", "api"),
    ("1", "{{ .Labels.job }}", "api"),
    ("1", "{{ $labels.__name__ }}", "m"),
    ("1", "[{{ $labels.missing }}]", "[]"),
    ("1", "[{{ $externalLabels.x }}]", "[]"),
    ("1", "{{ $externalLabels.cluster }}", "eu1"),
    ("1", "{{ .ExternalLabels.cluster }}", "eu1"),
    ("1", "{{ index $labels \"job\" }}", "api"),
    # string functions
    ("1", "{{ toUpper $labels.job }}", "API"),
    ("1", "{{ $labels.job | toUpper }}", "API"),
    ("1", '{{ toLower "AbC" }}', "abc"),
    ("1", '{{ title "hello world-x" }}', "Hello World-X"),
    ("1", "{{ stripPort $labels.instance }}", "host"),
    ("1", '{{ stripPort "[::1]:80" }}', "::1"),
    ("1", '{{ stripPort "a:b:c" }}', "a:b:c"),
    # constants, trimming, comments
    ("1", "{{ 1.5 }}", "1.5"),
    ("1", "{{ 1e6 }}", "1e+06"),
    ("1", "{{ 42 }}", "42"),
    ("1", '{{ "a\\tb" }}', "a\tb"),
    ("1", "{{ `raw\\n` }}", "raw\\n"),
    ("1", "a  {{- $value -}}  b", "a1b"),
    ("1", "a{{/* c */}}b", "ab"),
    ("1", "a {{- /* c */ -}} b", "ab"),
]

# Cases where Headroom renders something else than Prometheus (promtool's answer shown).
DIFFERENT = [
    pytest.param("1", '{{ "café" }}', "café", id="non-ASCII string literal"),
    pytest.param("21.5", '{{ printf "%.1f °C" $value }}', "21.5 °C", id="non-ASCII printf format"),
    pytest.param("1234567", '{{ printf "%g" $value }}', "1.234567e+06", id="printf %g shortest digits"),
    pytest.param("1234567", '{{ printf "%G" $value }}', "1.234567E+06", id="printf %G shortest digits"),
    pytest.param("1234567", '{{ printf "%s" $value }}', "%!s(float64=1.234567e+06)", id="printf %s of a float"),
    pytest.param("2.5", '{{ printf "%5s|" $value }}', "%!s(float64=  2.5)|", id="printf %5s of a float"),
    pytest.param("1", '{{ printf "%s" 3 }}', "%!s(int=3)", id="printf %s of an int"),
    pytest.param("1234567", '{{ printf "%x" $value }}', "0x1.2d687p+20", id="printf %x of a float"),
    pytest.param("1", '{{ printf "%o" 8 }}', "10", id="printf %o"),
    pytest.param("1", '{{ printf "%q" "a\\"b\\n" }}', '"a\\"b\\n"', id="printf %q escapes a newline"),
    pytest.param("1", "{{ toUpper $labels.text }}", "A–B ßX", id="toUpper keeps sharp s"),
    pytest.param("1", "{{ title $labels.text }}", "A–b ßx", id="title: non-ASCII punctuation is no separator"),
]


def render(value_text: str, template: str) -> str:
    return Template.parse(template).render(LABELS, float(value_text), EXTERNAL_LABELS)


@pytest.mark.parametrize(("value", "template", "expected"), CONFIRMED)
def test_renders_as_prometheus(value, template, expected):
    assert render(value, template) == expected


@pytest.mark.parametrize(("value", "template", "expected"), DIFFERENT)
def test_renders_as_prometheus_where_headroom_differed(value, template, expected):
    """BUGS: each case is what promtool 2.42 renders; see the ids for what differs."""
    assert render(value, template) == expected


def test_template_error_at_render_time_renders_in_place_of_the_text():
    # Prometheus: "<error expanding template: error executing template __alert_X: ...
    # error calling humanizeDuration: strconv.ParseFloat: parsing "abc": invalid syntax>"
    text = render("1", 'before {{ humanizeDuration "abc" }} after')
    assert text.startswith("<error expanding template: ") and text.endswith(">")


def test_rendering_does_not_depend_on_missing_external_labels():
    assert Template.parse("[{{ $externalLabels.cluster }}]").render(LABELS, 1.0) == "[]"


def test_go_float_prints_shortest_round_trip_digits():
    for value in (0.1, 1 / 3, 2**53 + 0.0, 5e-324, 1.7976931348623157e308):
        assert float(go_float(value)) == value


# (template, Go's parse error as promtool check rules reports it for a rule named A)
PARSE_ERRORS = [
    ("{{ if }}x{{ end }}", "template: __alert_A:1: missing value for if"),
    ("{{ else }}", "template: __alert_A:1: unexpected {{else}}"),
    ("{{ range $labels }}", "template: __alert_A:1: unexpected EOF"),
    ("{{ $undefined }}", 'template: __alert_A:1: undefined variable "$undefined"'),
    ('{{ tmpl "x" . }}', 'template: __alert_A:1: function "tmpl" not defined'),
    ("{{ unknownFunction $value }}", 'template: __alert_A:1: function "unknownFunction" not defined'),
    ("{{ $x := 1 }}{{ if true }}{{ $y := 2 }}{{ end }}{{ $y }}", 'template: __alert_A:1: undefined variable "$y"'),
    ("{{ $value | 1 }}", "template: __alert_A:1: non executable command in pipeline stage 2"),
    ("{{ break }}", "template: __alert_A:1: {{break}} outside {{range}}"),
    ("{{ $value }", 'template: __alert_A:1: unexpected "}" in operand'),
    ("{{ $value", "template: __alert_A:1: unclosed action"),
    ("{{ }}", "template: __alert_A:1: missing value for command"),
    ("{{ ) }}", 'template: __alert_A:1: unexpected ")" in command'),
    ('{{ "abc }}', "template: __alert_A:1: unterminated quoted string"),
    ("{{ 0x }}", 'template: __alert_A:1: illegal number syntax: "0x"'),
    ("{{ if 1 }}{{ else with 2 }}{{ end }}", "template: __alert_A:1: unexpected <with> in else"),
    ('{{ define "x" }}a{{ end }}{{ define "x" }}b{{ end }}', 'template: __alert_A:1: template: multiple definition of template "x"'),
    ("{{ /* bad */ }}", 'template: __alert_A:1: unexpected "/" in command'),
    ('{{ "a".x }}', 'template: __alert_A:1: unexpected . after term "\\"a\\""'),
    ("{{ range . }}{{ break 1 }}{{ end }}", 'template: __alert_A:1: unexpected "1" in {{break}}'),
    ("{{ 99999999999999999999 }}", 'template: __alert_A:1: integer overflow: "99999999999999999999"'),
]


@pytest.mark.parametrize(("template", "message"), PARSE_ERRORS)
def test_templates_go_refuses_are_refused_at_parse_time_with_gos_message(template, message):
    with pytest.raises(TemplateError) as caught:
        Template.parse(template, "__alert_A")
    assert str(caught.value) == message


# --- the oracle ------------------------------------------------------------------------

_ANNOTATION = re.compile(r'^\s*Annotations:\{a="(.*)"\}\s*$')
_ALERTNAME = re.compile(r"^\s*alertname: (C\d+), time")


def promtool_renders(cases: list[tuple[str, str]], tmp_path) -> list[str]:
    """What Prometheus renders for each (value, template): one alerting rule per case,
    each expected to produce no alert, so promtool reports the alert it did produce."""
    rules, series, checks = [], [], []
    labels = ", ".join(f'{k}="{v}"' for k, v in LABELS.items() if k != "__name__")
    for i, (value, template) in enumerate(cases):
        series.append({"series": f'm{{case="{i}", {labels}}}', "values": value})
        rules.append({"alert": f"C{i}", "expr": f'm{{case="{i}"}}', "annotations": {"a": template}})
        checks.append({"eval_time": "0m", "alertname": f"C{i}", "exp_alerts": []})
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": [{"name": "t", "rules": rules}]}, allow_unicode=True))
    test = {"interval": "1m", "external_labels": EXTERNAL_LABELS, "input_series": series, "alert_rule_test": checks}
    (tmp_path / "test.yml").write_text(
        yaml.safe_dump({"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": [test]}, allow_unicode=True)
    )
    run = subprocess.run(["promtool", "test", "rules", str(tmp_path / "test.yml")], capture_output=True, text=True)
    got, current = {}, None
    for line in (run.stdout + run.stderr).splitlines():
        if m := _ALERTNAME.match(line):
            current = m.group(1)
        elif m := _ANNOTATION.match(line):
            got[current] = ast.literal_eval('"' + m.group(1) + '"')  # Go quotes like Python's escapes here
    assert len(got) == len(cases), run.stdout + run.stderr
    return [got[f"C{i}"] for i in range(len(cases))]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian package prometheus) is not installed")
def test_promtool_still_renders_every_recorded_case(tmp_path):
    cases = CONFIRMED + [tuple(p.values) for p in DIFFERENT]
    rendered = promtool_renders([(v, t) for v, t, _ in cases], tmp_path)
    assert [(t, r) for (_, t, _), r in zip(cases, rendered)] == [(t, e) for _, t, e in cases]


def promtool_parse_error(template: str, tmp_path) -> str:
    """What ``promtool check rules`` says of an alerting rule ``A`` with the template as an annotation."""
    path = tmp_path / "rules.yml"
    rule = {"alert": "A", "expr": "up", "annotations": {"a": template}}
    path.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [rule]}]}))
    run = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True)
    found = re.search(r'annotation "a": (.*)', run.stdout + run.stderr)
    return found.group(1) if found else run.stdout + run.stderr


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian package prometheus) is not installed")
def test_promtool_still_refuses_every_recorded_template_with_the_same_message(tmp_path):
    assert [(t, promtool_parse_error(t, tmp_path)) for t, _ in PARSE_ERRORS] == PARSE_ERRORS
