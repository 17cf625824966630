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
from functools import cache
import shutil
import subprocess

import pytest
import yaml

from detector.output.templates import QueryFunc, Template, TemplateError, go_float
from detector.promql import EvalContext
from detector.rules.alerting import template_query
from tests.promtool_oracle import load_store

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

# Go text/template as Prometheus 2.42 runs it: actions, variables, Go's printing of maps and
# values, builtins, Prometheus's functions (query runs over QUERY_SERIES at time 0), and runtime
# errors, which replace the whole text. Every expected string is promtool's.
GO_TEMPLATES = [
    ('1', '{{ $labels }}', 'map[__name__:m instance:host:9090 job:api text:a–b ßx]'),
    ('1', '{{ .Labels }}', 'map[__name__:m instance:host:9090 job:api text:a–b ßx]'),
    ('1', '{{ $externalLabels }}', 'map[cluster:eu1]'),
    ('1', '{{ . }}', '{map[__name__:m instance:host:9090 job:api text:a–b ßx] map[cluster:eu1]  1}'),
    ('1', '{{ if gt $value 1 }}x{{ end }}', '<error expanding template: error executing template __alert_T: template: __alert_T:1:118: executing "__alert_T" at <gt $value 1>: error calling gt: incompatible types for comparison>'),
    ('2', '{{ if gt $value 1.0 }}high{{ else }}low{{ end }}', 'high'),
    ('0.5', '{{ if gt $value 1.0 }}high{{ else if gt $value 0.4 }}mid{{ else }}low{{ end }}', 'mid'),
    ('1', '{{ range $k, $v := $labels }}{{ $k }}={{ $v }},{{ end }}', '__name__=m,instance=host:9090,job=api,text=a–b ßx,'),
    ('1', '{{ range $labels }}[{{ . }}]{{ end }}', '[m][host:9090][api][a–b ßx]'),
    ('1', '{{ range $i, $e := $labels }}{{ $i }}{{ end }}', '__name__instancejobtext'),
    ('1', '{{ with $labels.job }}job={{ . }}{{ end }}', 'job=api'),
    ('1', '{{ with $labels.nope }}x{{ else }}none{{ end }}', 'none'),
    ('1', '{{ $x := 1 }}{{ $x }}{{ $x = 2 }}{{ $x }}', '12'),
    ('1', '{{ $x := "a" }}{{ if true }}{{ $x = "b" }}{{ $y := 3 }}{{ end }}{{ $x }}', 'b'),
    ('1', '{{ len $labels }}', '4'),
    ('1', '{{ len "héllo" }}', '6'),
    ('1', '{{ index $labels "job" }}|{{ index $labels "nope" }}|', 'api||'),
    ('1', '{{ index "abc" 1 }}', '98'),
    ('1', '{{ slice "abcdef" 1 3 }}', 'bc'),
    ('1', '{{ print 1 2 "a" "b" 3.5 true }}', '1 2ab3.5 true'),
    ('1', '{{ println 1 "a" }}', '1 a\n'),
    ('1', '{{ printf "%v %T %T %T %T" $labels $labels $value 1 "s" }}', 'map[__name__:m instance:host:9090 job:api text:a–b ßx] map[string]string float64 int string'),
    ('1', '{{ printf "%T" . }}', 'struct { Labels map[string]string; ExternalLabels map[string]string; ExternalURL string; Value float64 }'),
    ('1', '{{ printf "%t %v" true false }}', 'true false'),
    ('1', '{{ html "<a href=\'x\'>&\\"" }}', '&lt;a href=&#39;x&#39;&gt;&amp;&#34;'),
    ('1', '{{ js "a\'b\\"c<d>e&f=g\\\\h" }}', 'a\\\'b\\"c\\u003Cd\\u003Ee\\u0026f\\u003Dg\\\\h'),
    ('1', '{{ urlquery "a b&c=d/é" }}', 'a+b%26c%3Dd%2F%C3%A9'),
    ('1', '{{ urlquery $labels.instance "x" }}', 'host%3A9090x'),
    ('1', '{{ and 1 0 2 }}|{{ or 0 "" "x" }}|{{ and 1 2 }}|{{ or 0 "" }}|{{ not 0 }}|{{ not "a" }}', '0|x|2||true|false'),
    ('1', '{{ eq 1 1 }}{{ eq "a" "b" "a" }}{{ ne 1 2 }}{{ lt 1 2 }}{{ le 2 2 }}{{ gt 1.5 1.0 }}{{ ge "b" "a" }}', 'truetruetruetruetruetruetrue'),
    ('1', '{{ eq $value 1.0 }}', 'true'),
    ('1', '{{ eq $value 1 }}', '<error expanding template: error executing template __alert_T: template: __alert_T:1:115: executing "__alert_T" at <eq $value 1>: error calling eq: incompatible types for comparison>'),
    ('1', '{{ lt "a" 1 }}', '<error expanding template: error executing template __alert_T: template: __alert_T:1:115: executing "__alert_T" at <lt "a" 1>: error calling lt: incompatible types for comparison>'),
    ('1', '{{ eq $labels $labels }}', '<error expanding template: error executing template __alert_T: template: __alert_T:1:115: executing "__alert_T" at <eq $labels $labels>: error calling eq: non-comparable type map[__name__:m instance:host:9090 job:api text:a–b ßx]: map[string]string>'),
    ('1', '{{ reReplaceAll "(.*):(\\\\d+)" "$1 port $2" $labels.instance }}', 'host port 9090'),
    ('1', '{{ reReplaceAll "b*" "-" "abc" }}', '-a-c-'),
    ('1', '{{ match "^host" $labels.instance }}{{ match "x" "abc" }}', 'truefalse'),
    ('1', '{{ title "hello world" }} {{ toUpper "abc" }} {{ toLower "ABC" }}', 'Hello World ABC abc'),
    ('1', '{{ stripPort "host:9090" }} {{ stripDomain "db-1.example.com:9100" }} {{ stripDomain "10.0.0.1:80" }} {{ stripDomain "a.b" }}', 'host db-1:9100 10.0.0.1:80 a'),
    ('1', '{{ humanizeTimestamp 1435065584.128 }}', '2015-06-23 13:19:44.128 +0000 UTC'),
    ('1', '{{ humanizeTimestamp 0 }}|{{ humanizeTimestamp "NaN" }}', '1970-01-01 00:00:00 +0000 UTC|NaN'),
    ('1', '{{ toTime 1435065584.128 }}', '2015-06-23 13:19:44.128 +0000 UTC'),
    ('1', '{{ (toTime 1435065584).Unix }}', '1435065584'),
    ('1', '{{ parseDuration "1h30m" }} {{ parseDuration "1d" }} {{ parseDuration "0" }}', '5400 86400 0'),
    ('1', '{{ parseDuration "x" }}', '<error expanding template: error executing template __alert_T: template: __alert_T:1:115: executing "__alert_T" at <parseDuration "x">: error calling parseDuration: not a valid duration string: "x">'),
    ('1', '{{ graphLink "rate(x[5m])" }} {{ tableLink "up == 0" }}', '/graph?g0.expr=rate%28x%5B5m%5D%29&g0.tab=0 /graph?g0.expr=up+%3D%3D+0&g0.tab=1'),
    ('1', '{{ args 1 "a" }}', 'map[arg0:1 arg1:a]'),
    ('1', '{{ (args 1 "a").arg1 }}|{{ (args 1).nope }}|', 'a|<no value>|'),
    ('1', '{{ safeHtml "<b>" }}', '<b>'),
    ('1', '{{ printf "%T" (safeHtml "x") }}', 'template.HTML'),
    ('1', '{{ toUpper (safeHtml "x") }}', '<error expanding template: error executing template __alert_T: template: __alert_T:1:133: executing "__alert_T" at <"x">: wrong type for value; expected string; got template.HTML>'),
    ('1', '{{ call $value }}', '<error expanding template: error executing template __alert_T: template: __alert_T:1:115: executing "__alert_T" at <call $value>: error calling call: non-function of type float64>'),
    ('1', '{{ template "t" . }}{{ define "t" }}[{{ .Labels.job }}]{{ end }}', '[api]'),
    ('1', '{{ block "b" $labels.job }}<{{ . }}>{{ end }}', '<api>'),
    ('1', '{{ range $i, $c := slice "abc" 0 2 }}{{ $i }}{{ end }}', '<error expanding template: error executing template __alert_T: template: __alert_T:1:145: executing "__alert_T" at <2>: range can\'t iterate over ab>'),
    ('1', '{{ range 3 }}x{{ end }}', '<error expanding template: error executing template __alert_T: template: __alert_T:1:121: executing "__alert_T" at <3>: range can\'t iterate over 3>'),
    ('1', '{{ range $labels }}{{ if eq . "api" }}{{ break }}{{ end }}{{ . }},{{ end }}', 'm,host:9090,'),
    ('1', '{{ range $labels }}{{ if eq . "api" }}{{ continue }}{{ end }}{{ . }},{{ end }}', 'm,host:9090,a–b ßx,'),
    ('1', '{{ .Nope }}', '<error expanding template: error executing template __alert_T: template: __alert_T:1:115: executing "__alert_T" at <.Nope>: can\'t evaluate field Nope in type struct { Labels map[string]string; ExternalLabels map[string]string; ExternalURL string; Value float64 }>'),
    ('1', '{{ $labels.job.x }}', '<error expanding template: error executing template __alert_T: template: __alert_T:1:122: executing "__alert_T" at <$labels.job.x>: can\'t evaluate field x in type string>'),
    ('1', '{{ $value.x }}', '<error expanding template: error executing template __alert_T: template: __alert_T:1:121: executing "__alert_T" at <$value.x>: can\'t evaluate field x in type float64>'),
    ('1', '{{ nil }}', '<error expanding template: error executing template __alert_T: template: __alert_T:1:115: executing "__alert_T" at <nil>: nil is not a command>'),
    ('1', '{{ humanize "abc" }}', '<error expanding template: error executing template __alert_T: template: __alert_T:1:115: executing "__alert_T" at <humanize "abc">: error calling humanize: strconv.ParseFloat: parsing "abc": invalid syntax>'),
    ('1', '{{ humanize true }}', '<error expanding template: error executing template __alert_T: template: __alert_T:1:115: executing "__alert_T" at <humanize true>: error calling humanize: can\'t convert bool to float>'),
    ('1', "{{ 'a' }} {{ 0x1F }} {{ 1_000 }} {{ 0o17 }} {{ 017 }} {{ 1.5e3 }} {{ -3 }} {{ +4 }}", '97 31 1000 15 15 1500 -3 4'),
    ('1', '{{ printf "%d %s" \'a\' "x" }}', '97 x'),
    ('1', '{{ first 1 }}', '<error expanding template: error executing template __alert_T: template: __alert_T:1:121: executing "__alert_T" at <1>: can\'t handle 1 for arg of type template.queryResult>'),
    ('1', '{{ value 1.5 }}', '<error expanding template: error executing template __alert_T: template: __alert_T:1:121: executing "__alert_T" at <1.5>: can\'t handle 1.5 for arg of type *template.sample>'),
    ('1', '{{ len 3 }}', '<error expanding template: error executing template __alert_T: template: __alert_T:1:115: executing "__alert_T" at <len 3>: error calling len: len of type int>'),
    ('1', '{{ index $labels 1 }}', '<error expanding template: error executing template __alert_T: template: __alert_T:1:115: executing "__alert_T" at <index $labels 1>: error calling index: value has type int; should be string>'),
    ('1', '{{- /* comment */ -}} a {{- 1 }}', 'a1'),
    ('1', '{{ "a" | printf "%s%s" "b" }}', 'ba'),
    ('1', '{{ printf "%5.2f|%-8s|%08.3f|%x|%X|%o|%c|%U" 3.14159 "ab" -3.5 255 255 8 65 65 }}', ' 3.14|ab      |-003.500|ff|FF|10|A|U+0041'),
    ('1', '{{ printf "%v" nil }}', '<nil>'),
    ('1', '{{ printf "%s" $labels }}', 'map[__name__:m instance:host:9090 job:api text:a–b ßx]'),
    ('1', '{{ printf "%d" $labels }}', 'map[%!d(string=__name__):%!d(string=m) %!d(string=instance):%!d(string=host:9090) %!d(string=job):%!d(string=api) %!d(string=text):%!d(string=a–b ßx)]'),
    ('1', '{{ $labels.job | len }}', '3'),
    ('1', '{{ $ }}', '{map[__name__:m instance:host:9090 job:api text:a–b ßx] map[cluster:eu1]  1}'),
    ('1', '{{ $.Labels.job }}', 'api'),
    ('1', '{{ .Labels "x" }}', '<error expanding template: error executing template __alert_T: template: __alert_T:1:115: executing "__alert_T" at <.Labels>: Labels has arguments but cannot be invoked as function>'),
    ('1', '{{ $labels.job "x" }}', '<error expanding template: error executing template __alert_T: template: __alert_T:1:122: executing "__alert_T" at <$labels.job>: job is not a method but has arguments>'),
    ('1', '{{ printf }}', '<error expanding template: error executing template __alert_T: template: __alert_T:1:115: executing "__alert_T" at <printf>: wrong number of args for printf: want at least 1 got 0>'),
    ('1', '{{ humanize }}', '<error expanding template: error executing template __alert_T: template: __alert_T:1:115: executing "__alert_T" at <humanize>: wrong number of args for humanize: want 1 got 0>'),
    ('1', '{{ humanize 1 2 }}', '<error expanding template: error executing template __alert_T: template: __alert_T:1:115: executing "__alert_T" at <humanize>: wrong number of args for humanize: want 1 got 2>'),
    ('1', '{{ with $x := $labels.job }}{{ $x }}{{ end }}', 'api'),
    ('1', '{{ range $i, $e := $labels }}{{ $i }}:{{ $e }} {{ else }}empty{{ end }}', '__name__:m instance:host:9090 job:api text:a–b ßx '),
    ('1', '{{ range $e := $labels }}{{ $e }} {{ end }}', 'm host:9090 api a–b ßx '),
    ('1', '{{ $value | humanize | printf "%s!" }}', '1!'),
    ('1', '{{ printf "%.2f" 1 }}', '%!f(int=01)'),
    ('1', '{{ printf "%d" 1.0 }}', '%!d(float64=1)'),
    ('1', '{{ printf "%v" (args 1 "x" 2.5) }}', 'map[arg0:1 arg1:x arg2:2.5]'),
    ('1', '{{ index (args 1 "x") "arg1" }}', 'x'),
    ('1', '{{ printf "%q" \'x\' }}', "'x'"),
    ('1', '{{ len (args) }}', '0'),
    ('1', '{{ $labels.nope | len }}', '0'),
    ('1', '{{ ( $value ) }}', '1'),
    ('1', '{{ (1) }}', '1'),
    ('1', '{{ true }}|{{ false }}', 'true|false'),
    ('1', '{{ not (eq $labels.job "api") }}', 'false'),
    ('1', '{{ if and (eq $labels.job "api") (gt $value 0.5) }}y{{ end }}', 'y'),
    ('1', '{{ if or (eq $labels.job "x") (index $labels "nope") }}y{{ else }}n{{ end }}', 'n'),
    ('1', '{{ if $labels.nope }}y{{ else }}n{{ end }}', 'n'),
    ('1', '{{ if $value }}y{{ end }}{{ if 0.0 }}z{{ end }}', 'y'),
    ('1', 'a {{- 1 -}} b {{ 2 }} c', 'a1b 2 c'),
    ('1', '{{ 3 }}  {{- 4 }}', '34'),
    ('1', '{{- 5 -}}', '5'),
    ('1', '{{ html "a" 1 2 }}', 'a1 2'),
    ('1', '{{ urlquery }}', ''),
    ('1', '{{ printf "%s %d" }}', '%!s(MISSING) %!d(MISSING)'),
    ('1', '{{ printf "%[2]d %[1]d" 1 2 }}', '2 1'),
    ('1', '{{ printf "%6.2f%%" 12.345 }}', ' 12.35%'),
    ('1', '{{ printf "%e" 0.0 }}', '0.000000e+00'),
    ('1', '{{ printf "%x" "héllo" }}', '68c3a96c6c6f'),
    ('1', '{{ printf "%5t|" true }}', ' true|'),
    ('1', '{{ print nil }}', '<nil>'),
    ('1', '{{ print $labels.nope }}', ''),
    ('1', '{{ print (index (args) "x") }}', '<nil>'),
    ('1', '{{ index (args) "x" }}', '<no value>'),
    ('1', '{{ println }}', '\n'),
    ('1', '{{ with query "up{job=\'db\'}" }}{{ . | first | label "instance" }}{{ end }}', 'c:5432'),
    ('1', '{{ query "up{job=\'db\'}" | first | value }}', '1'),
    ('1', '{{ query "disk_free_ratio" | first | value | humanizePercentage }}', '12.5%'),
    ('1', '{{ range query "up == 0" }}{{ .Labels.instance }} down{{ else }}all up{{ end }}', 'b:9100 down'),
    ('1', '{{ range query "up == 7" }}x{{ else }}none{{ end }}', 'none'),
    ('1', '{{ query "1 + 1" | first | value }}', '2'),
    ('1', '{{ (query "scalar(up{job=\'db\'})" | first).Labels }}', 'map[]'),
    ('1', '{{ query "count(up)" | first | value }}', '3'),
    ('1', '{{ range sortByLabel "instance" (query "up") }}{{ .Labels.instance }},{{ end }}', 'a:9100,b:9100,c:5432,'),
    ('1', '{{ query "up{job=\'db\'}" | first }}', '{map[__name__:up instance:c:5432 job:db] 1}'),
    ('1', '{{ query "up == 7" | first }}', '<error expanding template: error executing template __alert_T: template: __alert_T:1:133: executing "__alert_T" at <first>: error calling first: first() called on vector with no elements>'),
    ('1', '{{ len (query "up") }}', '3'),
    ('1', '{{ query "up{job=\'db\'}" | first | strvalue }}|', '|'),
    ('1', '{{ $x := query "up{job=\'db\'}" | first }}{{ $x.Value }} {{ $x.Labels.job }}', '1 db'),
    ('1', '{{ index (query "up{job=\'db\'}") 0 | value }}', '1'),
    ('1', '{{ (index (query "up{job=\'db\'}") 0).Value }}', '1'),
    ('1', '{{ printf "%.1f" (query "sum(up)" | first | value) }}', '2.0'),
    ('1', '{{ label "job" (query "up{job=\'db\'}" | first) }}', 'db'),
    # nil: Go's builtins take it as a reflect.Value
    ('1', '{{ or nil $labels.job }}|{{ and nil 1 }}|{{ not nil }}|{{ or nil }}|{{ and 1 nil }}', 'api|<no value>|true|<no value>|<no value>'),
    ('1', '{{ eq nil nil }}', 'true'),
    ('1', '{{ eq nil 1 }}', 'false'),
    ('1', '{{ eq 1 nil }}', 'false'),
    ('1', '{{ lt nil 1 }}', '<error expanding template: error executing template __alert_T: template: __alert_T:1:115: executing "__alert_T" at <lt nil 1>: error calling lt: invalid type for comparison>'),
    ('1', '{{ len nil }}', '<error expanding template: error executing template __alert_T: template: __alert_T:1:115: executing "__alert_T" at <len nil>: error calling len: reflect: call of reflect.Value.Type on zero Value>'),
    ('1', '{{ index nil 1 }}', '<error expanding template: error executing template __alert_T: template: __alert_T:1:115: executing "__alert_T" at <index nil 1>: error calling index: index of untyped nil>'),
    ('1', '{{ index $labels nil }}', '<error expanding template: error executing template __alert_T: template: __alert_T:1:115: executing "__alert_T" at <index $labels nil>: error calling index: value is nil; should be of type string>'),
    ('1', '{{ slice nil }}', '<error expanding template: error executing template __alert_T: template: __alert_T:1:115: executing "__alert_T" at <slice nil>: error calling slice: slice of untyped nil>'),
    ('1', '{{ call nil }}', '<error expanding template: error executing template __alert_T: template: __alert_T:1:115: executing "__alert_T" at <call nil>: error calling call: call of nil>'),
    ('1', '{{ printf "%v|%d" nil nil }}', '<nil>|%!d(<nil>)'),
    ('1', '{{ html nil }}', '&lt;no value&gt;'),
    ('1', '{{ print nil 1 nil }}', '<nil> 1 <nil>'),
    ('1', '{{ humanize nil }}', '<error expanding template: error executing template __alert_T: template: __alert_T:1:115: executing "__alert_T" at <humanize nil>: error calling humanize: can\'t convert <nil> to float>'),
    ('1', '{{ toUpper nil }}', '<error expanding template: error executing template __alert_T: template: __alert_T:1:123: executing "__alert_T" at <nil>: cannot assign nil to string>'),
    ('1', '{{ first nil }}', '<error expanding template: error executing template __alert_T: template: __alert_T:1:115: executing "__alert_T" at <first nil>: error calling first: first() called on vector with no elements>'),
    ('1', '{{ value nil }}', '<error expanding template: error executing template __alert_T: template: __alert_T:1:115: executing "__alert_T" at <value nil>: error calling value: runtime error: invalid memory address or nil pointer dereference>'),
    ('1', '{{ with nil }}x{{ else }}y{{ end }}', '<error expanding template: error executing template __alert_T: template: __alert_T:1:120: executing "__alert_T" at <nil>: nil is not a command>'),
    ('1', '{{ if nil }}x{{ end }}', '<error expanding template: error executing template __alert_T: template: __alert_T:1:118: executing "__alert_T" at <nil>: nil is not a command>'),
    ('1', '{{ range nil }}x{{ else }}y{{ end }}', '<error expanding template: error executing template __alert_T: template: __alert_T:1:121: executing "__alert_T" at <nil>: nil is not a command>'),
    ('1', '{{ $x := nil }}', '<error expanding template: error executing template __alert_T: template: __alert_T:1:121: executing "__alert_T" at <nil>: nil is not a command>'),
    ('1', '{{ index (args 1) "nope" | printf "%v" }}', '<nil>'),
    ('1', '{{ eq (index (args 1) "nope") nil }}', 'true'),
    # define, template, block
    ('1', '{{ define "a" }}{{ template "a" . }}{{ end }}{{ template "a" . }}', '<error expanding template: error executing template __alert_T: template: __alert_T:1:140: executing "a" at <{{template "a" .}}>: exceeded maximum template depth (100000)>'),
    ('1', '{{ define "b" }}{{ .Nope }}{{ end }}{{ template "b" . }}', '<error expanding template: error executing template __alert_T: template: __alert_T:1:131: executing "b" at <.Nope>: can\'t evaluate field Nope in type struct { Labels map[string]string; ExternalLabels map[string]string; ExternalURL string; Value float64 }>'),
    ('1', '{{ template "missing" }}', '<error expanding template: error executing template __alert_T: template: __alert_T:1:124: executing "__alert_T" at <{{template "missing"}}>: template "missing" not defined>'),
    ('1', '{{ define "c" }}[{{ . }}]{{ end }}{{ template "c" }}{{ template "c" 1 }}{{ template "c" $labels.job }}', '[<no value>][1][api]'),
    ('1', '{{ define "d" }}{{ $ }}{{ end }}{{ template "d" "x" }}', 'x'),
    ('1', '{{ block "e" . }}{{ .Value }}{{ end }}', '1'),
    ('1', '{{ define "f" }}{{ humanize "x" }}{{ end }}{{ template "f" }}', '<error expanding template: error executing template __alert_T: template: __alert_T:1:131: executing "f" at <humanize "x">: error calling humanize: strconv.ParseFloat: parsing "x": invalid syntax>'),
    # methods of the *time.Time toTime returns
    ('1', '{{ (toTime 1700000123.456).Format "2006-01-02T15:04:05Z07:00 Mon Jan _2 3:4:5 PM pm MST -0700 .000 .999 ,00" }}', '2023-11-14T22:15:23Z Tue Nov 14 10:15:23 PM pm UTC +0000 .456 .456 ,45'),
    ('1', '{{ (toTime 0).Format "January Monday 06 01 02 03 04 05 1 2 3 4 5 -07:00 Z0700 2006.000000000" }}', 'January Thursday 70 01 01 12 00 00 1 1 12 0 0 +00:00 Z 1970.000000000'),
    ('1', '{{ (toTime 1700000123).Unix }} {{ (toTime 1700000123.5).UnixMilli }} {{ (toTime 1.5).UnixNano }} {{ (toTime 1700000123).Year }} {{ (toTime 1700000123).Hour }}', '1700000123 1700000123500 1500000000 2023 22'),
    ('1', '{{ (toTime 1700000123).UTC }}', '2023-11-14 22:15:23 +0000 UTC'),
    ('1', '{{ (toTime 1700000123).Format }}', '<error expanding template: error executing template __alert_T: template: __alert_T:1:123: executing "__alert_T" at <1700000123>: wrong number of args for Format: want 1 got 0>'),
    ('1', '{{ (toTime 1700000123).Nope }}', '<error expanding template: error executing template __alert_T: template: __alert_T:1:123: executing "__alert_T" at <1700000123>: can\'t evaluate field Nope in type *time.Time>'),
    ('1', '{{ toTime "NaN" }}', '<error expanding template: error executing template __alert_T: template: __alert_T:1:115: executing "__alert_T" at <toTime "NaN">: error calling toTime: value is NaN or Inf>'),
    ('1', '{{ printf "%T" (toTime 1) }}', '*time.Time'),
    ('1', '{{ (toTime 1700000123).Format "Jan 2, 2006 at 3:04pm (MST)" }}', 'Nov 14, 2023 at 10:15pm (UTC)'),
    # the shape of the most common community annotation (VALUE and LABELS on lines of their own)
    ("0.93", "VALUE = {{ $value }}\n  LABELS = {{ $labels }}",
     "VALUE = 0.93\n  LABELS = map[__name__:m instance:host:9090 job:api text:a\u2013b \u00dfx]"),
    ("1", "{{ $labels.job }}/{{ $labels.instance }}{{ if $labels.device }} {{ $labels.device }}{{ end }}\n", "api/host:9090\n"),
    # numbers, times, durations, hosts, case, regexps and escapes at their edges
    ('1', '{{ humanizeTimestamp 1e300 }}', '<error expanding template: error executing template __alert_T: template: __alert_T:1:115: executing "__alert_T" at <humanizeTimestamp 1e300>: error calling humanizeTimestamp: 1e+300 cannot be represented as a nanoseconds timestamp since it overflows int64>'),
    ('1', '{{ toTime 1e300 }}', '<error expanding template: error executing template __alert_T: template: __alert_T:1:115: executing "__alert_T" at <toTime 1e300>: error calling toTime: 1e+300 cannot be represented as a nanoseconds timestamp since it overflows int64>'),
    ('1', '{{ humanizeTimestamp -1.5 }}', '1969-12-31 23:59:58.5 +0000 UTC'),
    ('1', '{{ toTime -0.0015 }}', '1969-12-31 23:59:59.999 +0000 UTC'),
    ('1', '{{ humanizeTimestamp "1700000000" }}', '2023-11-14 22:13:20 +0000 UTC'),
    ('1', '{{ humanizeTimestamp 253402300800 }}', '<error expanding template: error executing template __alert_T: template: __alert_T:1:115: executing "__alert_T" at <humanizeTimestamp 253402300800>: error calling humanizeTimestamp: 2.534023008e+11 cannot be represented as a nanoseconds timestamp since it overflows int64>'),
    ('1', '{{ parseDuration "1y2w3d4h5m6s7ms" }}', '3.3019506007e+07'),
    ('1', '{{ parseDuration "" }}', '<error expanding template: error executing template __alert_T: template: __alert_T:1:115: executing "__alert_T" at <parseDuration "">: error calling parseDuration: empty duration string>'),
    ('1', '{{ parseDuration "5m1h" }}', '<error expanding template: error executing template __alert_T: template: __alert_T:1:115: executing "__alert_T" at <parseDuration "5m1h">: error calling parseDuration: not a valid duration string: "5m1h">'),
    ('1', '{{ humanize "1e3" }} {{ humanize "0x10" }} {{ humanize "1_000" }} {{ humanize " 1" }} {{ humanize "inf" }} {{ humanize "+Inf" }}', '<error expanding template: error executing template __alert_T: template: __alert_T:1:136: executing "__alert_T" at <humanize "0x10">: error calling humanize: strconv.ParseFloat: parsing "0x10": invalid syntax>'),
    ('1', '{{ humanize "1e400" }}', '<error expanding template: error executing template __alert_T: template: __alert_T:1:115: executing "__alert_T" at <humanize "1e400">: error calling humanize: strconv.ParseFloat: parsing "1e400": value out of range>'),
    ('1', '{{ stripPort "a:" }} {{ stripPort "[::1]" }} {{ stripPort "::1" }} {{ stripDomain "[fe80::1]:80" }} {{ stripDomain "host.example.com" }} {{ stripDomain "a.b:c:d" }}', 'a [::1] ::1 [fe80::1]:80 host a'),
    ('1', '{{ title "héllo wörld_x-y" }} {{ toUpper "straße ǆ" }} {{ toLower "İSTANBUL" }}', 'Héllo Wörld_x-Y STRAßE Ǆ istanbul'),
    ('1', '{{ reReplaceAll "(?i)API" "X" $labels.job }} {{ reReplaceAll "a|" "-" "banana" }} {{ reReplaceAll "" "-" "abc" }}', 'X -b-n-n- -a-b-c-'),
    ('1', '{{ match "[" "x" }}', '<error expanding template: error executing template __alert_T: template: __alert_T:1:115: executing "__alert_T" at <match "[" "x">: error calling match: error parsing regexp: missing closing ]: `[`>'),
    ('1', '{{ js "é\\u2028\\x01<>" }} {{ html "é\'\\x00" }} {{ urlquery "~-_. é" }}', 'é\\u2028\\u0001\\u003C\\u003E é&#39;� ~-_.+%C3%A9'),
]

# Known differences (promtool's answer shown): the text of a PromQL parse error inside query is
# Headroom's own, and Prometheus returns query results in its index order (which changes from
# run to run), Headroom sorted by labels: rules wanting an order use sortByLabel.
QUERY_DIFFERENCES = [
    ("1", '{{ query "foo(" }}', '<error expanding template: error executing template __alert_T: template: __alert_T:1:115: '
     'executing "__alert_T" at <query "foo(">: error calling query: 1:5: parse error: unclosed left parenthesis>'),
]


# Cases where Headroom once rendered something else than Prometheus (promtool's answer shown).
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


# Series every case can query ({{ query "up" }}), in promtool's notation.
QUERY_SERIES = [
    ('up{instance="a:9100", job="node"}', "1"),
    ('up{instance="b:9100", job="node"}', "0"),
    ('up{instance="c:5432", job="db"}', "1"),
    ('disk_free_ratio{instance="a:9100", mount="/"}', "0.125"),
]


@cache
def _query() -> QueryFunc:
    return template_query(EvalContext(load_store(QUERY_SERIES, 60_000), 0))


def render(value_text: str, template: str) -> str:
    """What Headroom renders for an alert of rule ``T`` with LABELS and this value, at time 0."""
    return Template.parse(template, "__alert_T").render(LABELS, float(value_text), EXTERNAL_LABELS, query=_query())


@pytest.mark.parametrize(("value", "template", "expected"), CONFIRMED)
def test_renders_as_prometheus(value, template, expected):
    assert render(value, template) == expected


@pytest.mark.parametrize(("value", "template", "expected"), GO_TEMPLATES)
def test_go_templates_render_as_prometheus(value, template, expected):
    assert render(value, template) == expected


def test_a_promql_error_in_query_renders_as_a_template_error_naming_the_call():
    (value, template, expected), = QUERY_DIFFERENCES
    rendered = render(value, template)
    assert rendered != expected  # the PromQL parser's words differ
    assert rendered.startswith(expected.split("error calling query: ")[0] + "error calling query: ")
    assert "unclosed left parenthesis" in rendered


@pytest.mark.parametrize(("value", "template", "expected"), DIFFERENT)
def test_renders_as_prometheus_where_headroom_differed(value, template, expected):
    """Each case is what promtool 2.42 renders; the ids say what Headroom once got wrong."""
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
    each expected to produce no alert, so promtool reports the alert it did produce.

    Every alert has the labels ``LABELS`` (the expression drops the series' case
    number), the QUERY_SERIES are there for ``query``, and the rule names in error
    messages read ``__alert_T`` as in :func:`render`."""
    rules, series, checks = [], [{"series": s, "values": v} for s, v in QUERY_SERIES], []
    labels = ", ".join(f'{k}="{v}"' for k, v in LABELS.items() if k != "__name__")
    for i, (value, template) in enumerate(cases):
        series.append({"series": f'm{{case="{i}", {labels}}}', "values": value})
        expr = f'label_replace(m{{case="{i}"}}, "case", "", "case", ".*")'
        rules.append({"alert": f"C{i}", "expr": expr, "annotations": {"a": template}})
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
            text = ast.literal_eval('"' + m.group(1) + '"')  # Go quotes like Python's escapes here
            got[current] = re.sub(r"__alert_C\d+", "__alert_T", text)
    assert len(got) == len(cases), run.stdout + run.stderr
    return [got[f"C{i}"] for i in range(len(cases))]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian package prometheus) is not installed")
def test_promtool_still_renders_every_recorded_case(tmp_path):
    cases = CONFIRMED + [tuple(p.values) for p in DIFFERENT] + GO_TEMPLATES + QUERY_DIFFERENCES
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
