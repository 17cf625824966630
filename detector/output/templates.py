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
from collections.abc import Callable, Iterable, Mapping
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


_PRINTF_VERB = re.compile(r"%([-+# 0]*)(\d+)?(?:\.(\d*))?(.?)", re.DOTALL)


def go_printf(fmt: str, *args: object) -> str:
    """Go's ``fmt.Sprintf`` for float64, int and string arguments.

    >>> go_printf("%g|%.3g|%x|%s|%5s|", 1234567.0, 1234567.0, 1234567.0, 3, 2.5)
    '1.234567e+06|1.23e+06|0x1.2d687p+20|%!s(int=3)|%!s(float64=  2.5)|'
    """
    pending = list(args)
    out = []
    pos = 0
    for m in _PRINTF_VERB.finditer(fmt):
        out.append(fmt[pos : m.start()])
        pos = m.end()
        flags, width, prec, verb = m.groups()
        if verb == "%":
            out.append("%")
        elif not verb:
            out.append("%!(NOVERB)")
        elif not pending:
            out.append(f"%!{verb}(MISSING)")
        else:
            arg = pending.pop(0)
            if verb == "v":  # with %v, + and # ask for Go syntax rather than a sign or an alternate form
                verb = "q" if "#" in flags and isinstance(arg, str) else verb
                flags = flags.replace("+", "").replace("#", "")
            out.append(_format_one(arg, flags, int(width or 0), None if prec is None else int(prec or 0), verb))
    out.append(fmt[pos:])
    if pending:
        out.append("%!(EXTRA " + ", ".join(f"{_go_type(a)}={_format_one(a, '', 0, None, 'v')}" for a in pending) + ")")
    return "".join(out)


def _go_type(a: object) -> str:
    return "float64" if isinstance(a, float) else "int" if isinstance(a, int) else "string"


def _format_one(arg: object, flags: str, width: int, prec: int | None, verb: str) -> str:
    if verb == "T":
        return _pad(_go_type(arg), flags, width)
    if isinstance(arg, float):
        text = _format_float(arg, flags, width, prec, verb)
    elif isinstance(arg, int):
        text = _format_int(arg, flags, width, prec, verb)
    else:
        text = _format_str(str(arg), flags, width, prec, verb)
    if text is None:
        # A verb that does not fit the type: Go prints the value with %v, keeping width and precision.
        return f"%!{verb}({_go_type(arg)}={_format_one(arg, flags, width, prec, 'v')})"
    return text


def _format_float(v: float, flags: str, width: int, prec: int | None, verb: str) -> str | None:
    if verb not in "vgGeEfFxXb":
        return None
    if math.isnan(v) or math.isinf(v):
        num = go_float(v)
    elif verb in "xX":
        num = _go_hex_float(v, prec)
        num = num.upper() if verb == "X" else num
    elif verb == "b":  # the integer mantissa and binary exponent as stored; 0 and subnormals at -1074
        exp = math.frexp(abs(v))[1] - 53 if abs(v) >= 2**-1022 else -1074
        num = f"{'-' if math.copysign(1, v) < 0 else ''}{int(math.ldexp(abs(v), -exp))}p{exp:+d}"
    elif prec is None and verb in "vgG":
        num = go_float(v)  # Go's %g without a precision prints the shortest digits, Python's prints six
        if "#" in flags:  # Go then keeps a decimal point and pads to six significant digits
            mant, e, exp = num.partition("e")
            significant = len(mant.lstrip("-").replace(".", "").lstrip("0")) or 1
            num = mant + ("" if "." in mant else ".") + "0" * (6 - significant) + e + exp
        num = num.upper() if verb == "G" else num
    else:
        num = f"%{'#' if '#' in flags else ''}.{6 if prec is None else prec}{'g' if verb == 'v' else verb}" % v
    return _pad_number(num, flags, width)


def _go_hex_float(v: float, prec: int | None) -> str:
    """Go's %x of a finite float: ``0x1.<hex fraction>p±dd``, shortest or rounded to prec hex digits."""
    mant, exp = math.frexp(abs(v))  # 0.5 <= mant < 1, so 2 * mant is the 1.<fraction> Go prints
    bits, exp = int(mant * 2**53), (exp - 1 if v else 0)  # 53 bits: the leading 1 and 52 of fraction
    if prec is not None and prec < 13:
        shift = 52 - 4 * prec
        bits, rest = divmod(bits, 1 << shift)
        half = (1 << shift) >> 1
        bits += rest > half or (rest == half and bits & 1)  # round half to even
        if bits >> (4 * prec) == 2:  # rounded up to 2.0
            bits, exp = bits >> 1, exp + 1
        bits <<= shift
    frac = f"{bits & ((1 << 52) - 1):013x}"
    frac = frac.rstrip("0") if prec is None else frac[:prec].ljust(prec, "0")
    sign = "-" if math.copysign(1, v) < 0 else ""
    return f"{sign}0x{bits >> 52}{'.' + frac if frac else ''}p{exp:+03d}"


_INT_VERBS = {"d": "d", "v": "d", "b": "b", "o": "o", "O": "o", "x": "x", "X": "X"}


def _format_int(n: int, flags: str, width: int, prec: int | None, verb: str) -> str | None:
    if verb in "cq":
        char = chr(n) if 0 <= n <= 0x10FFFF and not 0xD800 <= n < 0xE000 else "\ufffd"
        return _pad(char if verb == "c" else go_quote(char, "'", "+" in flags), flags, width)
    if verb == "U":  # Go reads the int as a uint64
        return _pad(f"U+{n & (2**64 - 1):0{max(prec or 0, 4)}X}", flags.replace("0", ""), width)
    if verb not in _INT_VERBS:
        return None
    if prec == 0 and n == 0:
        return " " * width  # Go prints no digits and no sign at all
    digits = format(abs(n), _INT_VERBS[verb])
    sign = "-" if n < 0 else "+" if "+" in flags else " " if " " in flags else ""
    if prec is not None:  # a precision is a minimum digit count, and turns off zero padding
        digits = digits.zfill(prec)
    elif "0" in flags and "-" not in flags:
        digits = digits.zfill(width - len(sign))  # Go zero pads the digits, before adding any 0x prefix
    if "#" in flags and verb in "bxXoO":
        digits = {"b": "0b", "x": "0x", "X": "0X"}.get(verb, "" if digits.startswith("0") else "0") + digits
    if verb == "O":
        digits = "0o" + digits
    return _pad(sign + digits, flags.replace("0", ""), width)


def _format_str(s: str, flags: str, width: int, prec: int | None, verb: str) -> str | None:
    if verb in "xX":
        data = s.encode()[:prec]  # here the precision counts bytes
        text = data.hex(" ") if " " in flags else data.hex()
        return _pad(text.upper() if verb == "X" else text, flags, width)
    s = s[:prec]  # elsewhere it counts characters (runes)
    if verb in "vs":
        return _pad(s, flags, width)
    if verb == "q":
        return _pad(go_quote(s, '"', "+" in flags), flags, width)
    return None


def _pad(text: str, flags: str, width: int) -> str:
    if "-" in flags:
        return text.ljust(width)
    return text.rjust(width, "0" if "0" in flags else " ")  # Go zero pads strings too


def _pad_number(num: str, flags: str, width: int) -> str:
    """Go's padding of a formatted number: the sign flags, and zero padding after the sign."""
    sign, body = (num[0], num[1:]) if num[0] in "+-" else ("+", num)
    if sign == "+":  # shown only when the flags ask for it, except that Go always prints +Inf
        sign = "+" if "+" in flags else " " if " " in flags else "+" if body == "Inf" else ""
    if body in ("Inf", "NaN"):
        return _pad(sign + body, flags.replace("0", ""), width)
    if "0" in flags and "-" not in flags:
        return sign + body.rjust(width - len(sign), "0")
    return _pad(sign + body, flags, width)


_QUOTE_ESCAPES = {"\a": r"\a", "\b": r"\b", "\f": r"\f", "\n": r"\n", "\r": r"\r", "\t": r"\t", "\v": r"\v"}


def go_quote(s: str, quote: str = '"', ascii_only: bool = False) -> str:
    """strconv.Quote (QuoteToASCII with ascii_only): non-printable characters escaped as Go does."""
    out = []
    for c in s:
        if c in (quote, "\\"):
            out.append("\\" + c)
        elif c.isprintable() and (c.isascii() or not ascii_only):  # same classes as Go's unicode.IsPrint
            out.append(c)
        elif c in _QUOTE_ESCAPES:
            out.append(_QUOTE_ESCAPES[c])
        elif c < " " or c == "\x7f":
            out.append(f"\\x{ord(c):02x}")
        else:
            out.append(f"\\u{ord(c):04x}" if ord(c) < 0x10000 else f"\\U{ord(c):08x}")
    return quote + "".join(out) + quote


def format_labels(labels: Iterable[tuple[str, str]]) -> str:
    """A label set as Prometheus prints it (``labels.Labels.String()``): ``{a="1", b="2"}``.

    >>> print(format_labels([("job", 'a"b'), ("le", "+Inf")]))
    {job="a\\"b", le="+Inf"}
    """
    return "{" + ", ".join(f"{k}={go_quote(v)}" for k, v in labels) + "}"


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


# Go maps case rune by rune with Unicode's simple (one-to-one) mappings. Python's str methods use
# the full mappings, so where they give several characters Go keeps the rune (ß stays ß) -- except
# that the Greek letters with ypogegrammeni uppercase to their one-character titlecase (ᾀ → ᾈ),
# and İ, the one character that lowercases to two, lowercases to the plain i.


def _single(mapped: str) -> str | None:
    return mapped if len(mapped) == 1 else None


def _to_upper(v: object) -> str:
    return "".join(_single(c.upper()) or _single(c.title()) or c for c in str(v))


def _to_lower(v: object) -> str:
    return "".join(c.lower()[0] for c in str(v))


def _title(v: object) -> str:
    """strings.Title: title-case every rune that follows a separator."""
    out, prev = [], " "
    for c in str(v):
        # Go's isSeparator: an ASCII character other than a letter, digit or underscore, or a space;
        # other non-ASCII characters, punctuation like an en dash included, are no separators.
        separator = not (prev.isalnum() or prev == "_") if prev.isascii() else prev.isspace()
        out.append((_single(c.title()) or c) if separator else c)
        prev = c
    return "".join(out)


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
    "toUpper": _to_upper,
    "toLower": _to_lower,
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
    text: str  # a string's value, unquoted; the source text of the others


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

    def render(
        self, labels: Mapping[str, str], value: float, external_labels: Mapping[str, str] | None = None, external_url: str = ""
    ) -> str:
        """Expand for one alert; a runtime error renders as Prometheus does, in place of the text."""
        scope = _Scope(labels, value, external_labels or {}, external_url)
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
        args = [(k, _go_unquote(t) if k == "string" else t) for k, t in args]
        commands.append(_Command(func, tuple(_Operand(k, t) for k, t in args)))
        current = []
    if commands[0].func is None and len(commands) == 1 and commands[0].args[0].kind == "var" and commands[0].args[0].text in ("$labels", "$externalLabels"):
        raise TemplateError(f"printing a whole label map is not supported (template {source!r})")
    return tuple(commands)


# Any other backslash matches the empty last alternative: Go refuses it ("invalid syntax"), and so
# does \' -- Go allows that one in rune literals only.
_GO_ESCAPE = re.compile(rb'\\(?:([abfnrtv\\"])|x([0-9a-fA-F]{2})|([0-7]{3})|u([0-9a-fA-F]{4})|U([0-9a-fA-F]{8})|)')
_GO_SIMPLE_ESCAPES = bytes.maketrans(b"abfnrtv", b"\a\b\f\n\r\t\v")


def _go_unquote(literal: str) -> str:
    """strconv.Unquote of a string constant: a "quoted" string with Go's escapes, or a `raw` one."""
    if literal[0] == "`":
        return literal[1:-1].replace("\r", "")  # Go drops carriage returns from raw strings
    if "\n" in literal:
        raise TemplateError(f"unterminated quoted string {literal!r}")

    def unescape(m: re.Match[bytes]) -> bytes:
        simple, hex_byte, octal_byte, u4, u8 = m.groups()
        if simple:
            return simple.translate(_GO_SIMPLE_ESCAPES)
        if hex_byte or octal_byte:
            byte = int(hex_byte, 16) if hex_byte else int(octal_byte, 8)
            if byte < 256:
                return bytes([byte])
        elif u4 or u8:
            rune = int(u4 or u8, 16)
            if rune <= 0x10FFFF and not 0xD800 <= rune < 0xE000:
                return chr(rune).encode()
        raise TemplateError(f"invalid escape in string {literal!r}")

    # \x and octal escapes are bytes: they may spell UTF-8 ("\xc3\xa9" is é). Bytes that are no
    # UTF-8 become U+FFFD, as they do when Prometheus sends the annotation on as JSON.
    return _GO_ESCAPE.sub(unescape, literal[1:-1].encode()).decode(errors="replace")


_VARIABLES = {"$labels", "$value", "$externalLabels", "$externalURL"}
_FIELDS = {".Labels": "$labels", ".Value": "$value", ".ExternalLabels": "$externalLabels", ".ExternalURL": "$externalURL"}


class _Scope:
    def __init__(self, labels: Mapping[str, str], value: float, external: Mapping[str, str], external_url: str) -> None:
        self.vars: dict[str, object] = {
            "$labels": labels,
            "$value": value,
            "$externalLabels": external,
            "$externalURL": external_url,
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
            return op.text
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
