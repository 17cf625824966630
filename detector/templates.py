"""Alert label and annotation templates, rendered as Prometheus renders them.

Prometheus templates are Go ``text/template`` with a few helper functions.
Headroom reads the subset alerting rules use: ``{{ $labels.x }}``,
``{{ $value }}``, ``{{ $externalLabels.x }}``, ``.Labels.x`` / ``.Value``,
pipelines such as ``{{ $value | printf "%.2f" }}``, and the functions in
:data:`FUNCTIONS`. Anything else (``if``, ``range``, ``query``...) is refused
when the rule file is loaded, naming the construct, never rendered wrong.

Floats print as Go prints them (``1e+06``, not ``1000000.0``).

>>> t = Template.parse('Queue {{ $labels.queue_name }} at {{ $value | printf "%.0f" }}%')
>>> t.render({"queue_name": "orders"}, 0.93 * 100)
'Queue orders at 93%'
>>> Template.parse("{{ $value }} / {{ humanize $value }}").render({}, 1234567.0)
'1.234567e+06 / 1.235M'
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal


class TemplateError(ValueError):
    """A template Headroom cannot render exactly as Prometheus would."""


def go_float(v: float) -> str:
    """``fmt.Sprint(v)`` for a float64, as ``{{ $value }}`` prints it."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v == 0:
        return "-0" if math.copysign(1, v) < 0 else "0"
    sign, digits, exponent = Decimal(repr(v)).as_tuple()
    text = "".join(map(str, digits)).rstrip("0") or "0"
    exp10 = len(digits) + exponent - 1
    neg = "-" if sign else ""
    # fmt's %v is %g with the shortest digits, which switches to an exponent
    # below 1e-04 and from 1e+06 on.
    if exp10 < -4 or exp10 >= 6:
        mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
        return f"{neg}{mantissa}e{'-' if exp10 < 0 else '+'}{abs(exp10):02d}"
    if exp10 >= len(text) - 1:
        return neg + text + "0" * (exp10 - len(text) + 1)
    if exp10 >= 0:
        return neg + text[: exp10 + 1] + "." + text[exp10 + 1 :]
    return neg + "0." + "0" * (-exp10 - 1) + text


def _go_g4(v: float) -> str:
    """Go's ``%.4g``."""
    if math.isnan(v) or math.isinf(v):
        return go_float(v)
    return "%.4g" % v


_PRINTF_VERB = re.compile(r"%([-+# 0]*)(\d+)?(?:\.(\d+))?([a-zA-Z%])")


def go_printf(fmt: str, *args: object) -> str:
    """Go's ``fmt.Sprintf`` for the verbs templates use: v s d f e g x q and %%."""
    pending = list(args)
    out = []
    pos = 0
    for m in _PRINTF_VERB.finditer(fmt):
        out.append(fmt[pos : m.start()])
        pos = m.end()
        flags, width, prec, verb = m.groups()
        if verb == "%":
            out.append("%")
            continue
        if not pending:
            out.append(f"%!{verb}(MISSING)")
            continue
        out.append(_format_one(pending.pop(0), flags, width, prec, verb))
    out.append(fmt[pos:])
    if pending:
        out.append("%!(EXTRA " + ", ".join(f"{_go_type(a)}={_go_value(a)}" for a in pending) + ")")
    return "".join(out)


def _go_type(a: object) -> str:
    return "float64" if isinstance(a, float) else "int" if isinstance(a, int) else "string"


def _go_value(a: object) -> str:
    return go_float(a) if isinstance(a, float) else str(a)


def _format_one(arg: object, flags: str, width: str | None, prec: str | None, verb: str) -> str:
    spec = "%" + flags + (width or "") + ("." + prec if prec is not None else "")
    if isinstance(arg, bool):
        arg = str(arg).lower()
    if verb in "vs" and not isinstance(arg, str):
        text = go_float(float(arg)) if isinstance(arg, float) else str(arg)
        return (spec + "s") % text
    if verb in "vs":
        return (spec + "s") % arg
    if verb == "q":
        return (spec + "s") % ('"' + str(arg).replace("\\", "\\\\").replace('"', '\\"') + '"')
    if isinstance(arg, float) and verb in "feEgG":
        if math.isnan(arg) or math.isinf(arg):
            return ("%" + flags.replace("0", "") + (width or "") + "s") % go_float(arg)
        return (spec + verb) % arg
    if isinstance(arg, int) and verb in "dxX":
        return (spec + verb) % arg
    if isinstance(arg, int) and verb in "feEgG":
        return f"%!{verb}(int={arg})"
    return f"%!{verb}({_go_type(arg)}={_go_value(arg)})"


def _to_float(v: object) -> float:
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            raise TemplateError(f"cannot convert {v!r} to a number") from None
    return float(v)  # type: ignore[arg-type]


def humanize(v: object) -> str:
    x = _to_float(v)
    if x == 0 or math.isnan(x) or math.isinf(x):
        return _go_g4(x)
    prefix = ""
    if abs(x) >= 1:
        for p in ("k", "M", "G", "T", "P", "E", "Z", "Y"):
            if abs(x) < 1000:
                break
            prefix, x = p, x / 1000
    else:
        for p in ("m", "u", "n", "p", "f", "a", "z", "y"):
            if abs(x) >= 1:
                break
            prefix, x = p, x * 1000
    return _go_g4(x) + prefix


def humanize1024(v: object) -> str:
    x = _to_float(v)
    if abs(x) <= 1 or math.isnan(x) or math.isinf(x):
        return _go_g4(x)
    prefix = ""
    for p in ("ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"):
        if abs(x) < 1024:
            break
        prefix, x = p, x / 1024
    return _go_g4(x) + prefix


def humanize_duration(v: object) -> str:
    x = _to_float(v)
    if math.isnan(x) or math.isinf(x):
        return _go_g4(x)
    if x == 0:
        return _go_g4(x) + "s"
    if abs(x) >= 1:
        sign = "-" if x < 0 else ""
        x = abs(x)
        # Go converts with int64(v) (wrapping past 2^63) and divides truncating.
        whole = int(x) if x < 2**63 else -(2**63)
        seconds, minutes = _trunc_mod(whole, 60), _trunc_mod(_trunc_div(whole, 60), 60)
        hours, days = _trunc_mod(_trunc_div(whole, 3600), 24), _trunc_div(whole, 86400)
        if days:
            return f"{sign}{days}d {hours}h {minutes}m {seconds}s"
        if hours:
            return f"{sign}{hours}h {minutes}m {seconds}s"
        if minutes:
            return f"{sign}{minutes}m {seconds}s"
        return f"{sign}{_go_g4(x)}s"
    prefix = ""
    for p in ("m", "u", "n", "p", "f", "a", "z", "y"):
        if abs(x) >= 1:
            break
        prefix, x = p, x * 1000
    return f"{_go_g4(x)}{prefix}s"


def _trunc_div(a: int, b: int) -> int:
    return -(-a // b) if a < 0 else a // b


def _trunc_mod(a: int, b: int) -> int:
    return a - b * _trunc_div(a, b)


def humanize_percentage(v: object) -> str:
    return _go_g4(_to_float(v) * 100) + "%"


def _strip_port(v: object) -> str:
    text = str(v)
    if text.startswith("["):
        return text[1 : text.index("]")] if "]" in text else text
    return text.rsplit(":", 1)[0] if text.count(":") == 1 else text


def _title(v: object) -> str:
    return re.sub(r"(^|[^\w])(\w)", lambda m: m.group(1) + m.group(2).upper(), str(v))


def _index(container: object, key: object) -> object:
    if not isinstance(container, Mapping):
        raise TemplateError("index of a non-map")
    return container.get(str(key), "")


FUNCTIONS: dict[str, Callable[..., object]] = {
    "printf": lambda fmt, *args: go_printf(str(fmt), *args),
    "humanize": humanize,
    "humanize1024": humanize1024,
    "humanizeDuration": humanize_duration,
    "humanizePercentage": humanize_percentage,
    "toUpper": lambda s: str(s).upper(),
    "toLower": lambda s: str(s).lower(),
    "title": _title,
    "stripPort": _strip_port,
    "index": _index,
}

_UNSUPPORTED_KEYWORDS = {"if", "else", "end", "range", "with", "define", "template", "block", "break", "continue"}
_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>"(?:[^"\\]|\\.)*"|`[^`]*`)
      | (?P<number>[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+))
      | (?P<pipe>\|)
      | (?P<var>\$[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)?)
      | (?P<field>\.[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)?)
      | (?P<ident>[A-Za-z_]\w*)
      | (?P<other>\S+)
    )""",
    re.VERBOSE,
)
_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.DOTALL)


@dataclass(frozen=True)
class _Operand:
    kind: str  # "string", "number", "var", "field"
    text: str


@dataclass(frozen=True)
class _Command:
    func: str | None  # None: the command is a single operand
    args: tuple[_Operand, ...]


_Pipeline = tuple[_Command, ...]


@dataclass(frozen=True)
class Template:
    """A parsed template: literal text and pipelines, rendered per alert."""

    source: str
    parts: tuple[str | _Pipeline, ...]

    @classmethod
    def parse(cls, source: str) -> Template:
        """Parse a template; :class:`TemplateError` names what is not supported."""
        parts: list[str | _Pipeline] = []
        pos = 0
        for m in _ACTION.finditer(source):
            text = source[pos : m.start()]
            if m.group(1):
                text = text.rstrip()
            parts.append(text)
            pos = m.end()
            if m.group(3):
                rest = source[pos:]
                pos += len(rest) - len(rest.lstrip())
            body = m.group(2).strip()
            if body.startswith("/*") and body.endswith("*/"):
                continue
            parts.append(_parse_pipeline(body, source))
        tail = source[pos:]
        if "{{" in tail:
            raise TemplateError(f"unclosed action in template {source!r}")
        parts.append(tail)
        return cls(source, tuple(p for p in parts if p != ""))

    def render(self, labels: Mapping[str, str], value: float, external_labels: Mapping[str, str] | None = None) -> str:
        """Expand for one alert; a runtime error renders as Prometheus does, in place of the text."""
        scope = _Scope(labels, value, external_labels or {})
        try:
            return "".join(p if isinstance(p, str) else _print(scope.run(p)) for p in self.parts)
        except (TemplateError, TypeError, ValueError) as exc:
            return f"<error expanding template: {exc}>"


def _parse_pipeline(body: str, source: str) -> _Pipeline:
    tokens = []
    for m in _TOKEN.finditer(body):
        kind = m.lastgroup
        text = m.group(kind)
        if kind == "other":
            raise TemplateError(f"unsupported syntax {text!r} in template {source!r}")
        tokens.append((kind, text))
    if not tokens:
        raise TemplateError(f"empty action in template {source!r}")
    if tokens[0][0] == "ident" and tokens[0][1] in _UNSUPPORTED_KEYWORDS:
        raise TemplateError(f"'{tokens[0][1]}' actions are not supported (template {source!r})")
    commands: list[_Command] = []
    current: list[tuple[str, str]] = []
    for tok in tokens + [("pipe", "|")]:
        if tok[0] != "pipe":
            current.append(tok)
            continue
        if not current:
            raise TemplateError(f"empty command in pipeline of template {source!r}")
        head_kind, head = current[0]
        if head_kind == "ident":
            if head not in FUNCTIONS:
                raise TemplateError(
                    f"function {head!r} is not supported in templates (supported: {', '.join(sorted(FUNCTIONS))})"
                )
            args = current[1:]
            func: str | None = head
        else:
            if len(current) > 1:
                raise TemplateError(f"unexpected {current[1][1]!r} after {head!r} in template {source!r}")
            args, func = current, None
        for kind, text in args:
            if kind == "ident":
                raise TemplateError(f"function {text!r} used as an argument in template {source!r}")
            if kind == "var" and text.split(".")[0] not in _VARIABLES:
                raise TemplateError(f"unknown variable {text!r} in template {source!r}")
        commands.append(_Command(func, tuple(_Operand(k, t) for k, t in args)))
        current = []
    if commands[0].func is None and len(commands) == 1 and commands[0].args[0].kind == "var" and commands[0].args[0].text in ("$labels", "$externalLabels"):
        raise TemplateError(f"printing a whole label map is not supported (template {source!r})")
    return tuple(commands)


_VARIABLES = {"$labels", "$value", "$externalLabels", "$externalURL"}
_FIELDS = {".Labels": "$labels", ".Value": "$value", ".ExternalLabels": "$externalLabels", ".ExternalURL": "$externalURL"}


class _Scope:
    def __init__(self, labels: Mapping[str, str], value: float, external: Mapping[str, str]) -> None:
        self.vars: dict[str, object] = {
            "$labels": labels,
            "$value": value,
            "$externalLabels": external,
            "$externalURL": "",
        }

    def run(self, pipeline: _Pipeline) -> object:
        result: object = None
        for i, command in enumerate(pipeline):
            args = [self.operand(a) for a in command.args]
            if i > 0:
                args.append(result)
            if command.func is None:
                result = args[0]
            else:
                result = FUNCTIONS[command.func](*args)
        return result

    def operand(self, op: _Operand) -> object:
        if op.kind == "string":
            text = op.text[1:-1]
            return text if op.text[0] == "`" else bytes(text, "utf-8").decode("unicode_escape")
        if op.kind == "number":
            return float(op.text) if any(c in op.text for c in ".eE") else int(op.text)
        name, _, key = op.text.partition(".") if op.kind == "var" else ("", "", "")
        if op.kind == "field":
            head, _, key = op.text[1:].partition(".")
            name = _FIELDS.get("." + head, "")
            if not name:
                raise TemplateError(f"unknown field {op.text!r}")
        value = self.vars[name]
        if key:
            if not isinstance(value, Mapping):
                raise TemplateError(f"{op.text}: not a map")
            return value.get(key, "")  # Prometheus uses missingkey=zero
        return value


def _print(value: object) -> str:
    if isinstance(value, float):
        return go_float(value)
    if value is None:
        return "<no value>"
    return str(value)
