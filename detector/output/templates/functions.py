"""The functions of Prometheus 2.42 alert templates: Go's builtins and Prometheus's own.

Each is a :class:`Function` with Go's parameter types, which decide what a
template may pass it and the errors Go reports otherwise.

>>> humanize(1234567.0), humanize1024(1536), humanize_duration(3661), humanize_percentage(0.25)
('1.235M', '1.5ki', '1h 1m 1s', '25%')
>>> strip_domain("db-1.example.com:9100"), strip_port("[::1]:80"), parse_duration("1h30m")
('db-1:9100', '::1', 5400.0)
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable, Iterable
from urllib.parse import quote_plus, urlsplit

from detector.output.templates.execute import FuncError, Function

# detector.promql imports this package (go_quote, format_labels): its Go helpers are imported where used.
from detector.output.templates.gofmt import _go_g4, go_float, go_printf
from detector.output.templates.values import GoAnyMap, GoByte, GoMap, GoTime, HTML, QueryResult, Sample, go_sprint, is_true, type_name


def to_float(v: object) -> float:
    """Prometheus's convertToFloat: a float64, an int, or a string strconv.ParseFloat reads."""
    if isinstance(v, float):
        return v
    if isinstance(v, int) and not isinstance(v, bool):
        return float(v)
    if isinstance(v, str) and not isinstance(v, HTML):
        from detector.promql.go_compat import _GO_FLOAT, go_parse_float  # strconv.ParseFloat, as PromQL reads numbers

        parsed = go_parse_float(v)
        if parsed is None:
            why = "value out of range" if _GO_FLOAT.fullmatch(v) else "invalid syntax"
            raise FuncError(f"strconv.ParseFloat: parsing {_quote(v)}: {why}")
        return parsed
    raise FuncError(f"can't convert {type_name(v)} to float")


def _quote(s: str) -> str:
    from detector.output.templates.gofmt import go_quote

    return go_quote(s)


def humanize(v: object) -> str:
    x = to_float(v)
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
    x = to_float(v)
    if abs(x) <= 1 or math.isnan(x) or math.isinf(x):
        return _go_g4(x)
    prefix = ""
    for p in ("ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"):
        if abs(x) < 1024:
            break
        prefix, x = p, x / 1024
    return _go_g4(x) + prefix


def humanize_duration(v: object) -> str:
    x = to_float(v)
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
    return _go_g4(to_float(v) * 100) + "%"


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



def _split_host_port(hostport: str) -> tuple[str, str] | None:
    """net.SplitHostPort; None where Go returns an error."""
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0 or end + 1 >= len(hostport) or hostport[end + 1] != ":":
            return None
        host, port = hostport[1:end], hostport[end + 2 :]
        if "[" in hostport[1:end + 1] or "]" in port or "[" in port:
            return None
        return host, port
    i = hostport.rfind(":")
    if i < 0:
        return None
    host, port = hostport[:i], hostport[i + 1 :]
    if ":" in host or "[" in host or "]" in host or "[" in port or "]" in port:
        return None
    return host, port


def strip_port(hostport: str) -> str:
    split = _split_host_port(hostport)
    return hostport if split is None else split[0]


def _is_ip(host: str) -> bool:
    if "%" in host:  # Go's ParseIP takes no IPv6 zone
        return False
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def strip_domain(hostport: str) -> str:
    split = _split_host_port(hostport)
    host, port = split if split is not None else (hostport, "")
    if _is_ip(host):
        return hostport
    host = host.split(".")[0]
    if port:
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return host


def _regexp(pattern: str) -> re.Pattern[str]:
    try:
        from detector.promql.go_regexp import go_regexp  # RE2 syntax, as label_replace reads it

        return go_regexp(pattern)
    except ValueError as exc:
        raise FuncError(f"error parsing regexp: {exc}: `{pattern}`") from None


def match(pattern: str, text: str) -> bool:
    return _regexp(pattern).search(text) is not None


def _must_compile(pattern: str) -> re.Pattern[str]:
    """regexp.MustCompile: its panic, which the template reports as the call's error."""
    try:
        return _regexp(pattern)
    except FuncError as exc:
        raise FuncError(f"regexp: Compile({_backquote(pattern)}): {exc}") from None


def _backquote(s: str) -> str:
    """strconv.Quote's choice in regexp's panic: `s` when it can be a raw string, else quoted."""
    return f"`{s}`" if "`" not in s and all(c == "\t" or (c.isprintable() and c != "\ufeff") for c in s) else _quote(s)


def re_replace_all(pattern: str, repl: str, text: str) -> str:
    """Go's Regexp.ReplaceAllString: ``$1``/``${name}`` expansion, and no empty match right after a match."""
    from detector.promql.go_regexp import go_expand  # $1 / ${name}, as label_replace expands them

    compiled = _must_compile(pattern)
    out, last_end = [], 0
    for m in compiled.finditer(text):
        start, end = m.span()
        out.append(text[last_end:start] if start >= last_end else "")
        if end > last_end or start == 0:
            out.append(go_expand(repl, m))
        last_end = end
    out.append(text[last_end:])
    return "".join(out)


_DURATION = re.compile(r"(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?")
_UNIT_MS = (365 * 86_400_000, 7 * 86_400_000, 86_400_000, 3_600_000, 60_000, 1000, 1)


def parse_duration(text: str) -> float:
    """Prometheus's model.ParseDuration, in seconds."""
    if text == "":
        raise FuncError("empty duration string")
    if text == "0":
        return 0.0
    m = _DURATION.fullmatch(text)
    if m is None:
        raise FuncError(f"not a valid duration string: {_quote(text)}")
    ms = sum(int(g) * unit for g, unit in zip(m.groups(), _UNIT_MS) if g)
    if ms * 1_000_000 >= 2**63:
        raise FuncError("duration out of range")
    return ms * 1_000_000 / 1e9


def _to_time(v: float) -> GoTime:
    if math.isnan(v) or math.isinf(v):
        raise FuncError("value is NaN or Inf")
    ns = v * 1e9
    if ns > 2**63 or ns < -(2**63):
        raise FuncError(f"{go_float(v)} cannot be represented as a nanoseconds timestamp since it overflows int64")
    ns_int = int(ns)
    ms = abs(ns_int) // 1_000_000 * (1 if ns_int >= 0 else -1)  # model.TimeFromUnixNano keeps milliseconds
    return GoTime(ms * 1_000_000)


def to_time(v: object) -> GoTime:
    return _to_time(to_float(v))


def humanize_timestamp(v: object) -> str:
    x = to_float(v)
    if math.isnan(x) or math.isinf(x):
        return _go_g4(x)
    return str(_to_time(x))


# --- Go's builtins ----------------------------------------------------------------------------

_KINDS = {bool: "bool", float: "float", str: "string", HTML: "string", int: "int", GoByte: "uint"}


def _kind(v: object) -> str | None:
    return _KINDS.get(type(v))


_BAD_TYPE, _BAD_COMPARISON = "invalid type for comparison", "incompatible types for comparison"


def _reflect_kind(v: object) -> str:
    return "map" if isinstance(v, GoMap) else "slice" if isinstance(v, QueryResult) else "ptr" if isinstance(v, (Sample, GoTime)) else "struct"


def _comparable(v: object) -> bool:
    return not isinstance(v, (GoMap, QueryResult))


def eq(arg1: object, *others: object) -> bool:
    if not others:
        raise FuncError("missing argument for comparison")
    k1 = _kind(arg1)
    for arg in others:
        k2 = _kind(arg)
        if k1 != k2:
            if {k1, k2} == {"int", "uint"}:
                truth = arg1 == arg
            elif arg1 is not None and arg is not None:
                raise FuncError(_BAD_COMPARISON)
            else:
                truth = False
        elif k1 is not None:
            truth = arg1 == arg
        else:  # pointers, maps, slices, structs, nil: Go compares same kinds, and nil with anything
            if arg1 is not None and arg is not None and _reflect_kind(arg1) != _reflect_kind(arg):
                raise FuncError(f"non-comparable types {go_printf('%s', arg1)}: {type_name(arg1)}, "
                                f"{type_name(arg)}: {go_printf('%v', arg)}")
            if arg1 is None or arg is None:
                truth = arg1 is None and arg is None
            elif not _comparable(arg):
                raise FuncError(f"non-comparable type {go_printf('%s', arg)}: {type_name(arg)}")
            else:
                truth = arg1 is arg
        if truth:
            return True
    return False


def lt(arg1: object, arg2: object) -> bool:
    k1, k2 = _kind(arg1), _kind(arg2)
    if k1 is None or k2 is None:
        raise FuncError(_BAD_TYPE)
    if k1 != k2:
        if {k1, k2} == {"int", "uint"}:
            return arg1 < arg2  # type: ignore[operator]
        raise FuncError(_BAD_COMPARISON)
    if k1 == "bool":
        raise FuncError(_BAD_TYPE)
    return arg1 < arg2  # type: ignore[operator]


def le(a: object, b: object) -> bool:
    return lt(a, b) or eq(a, b)


def _and(*thunks: Callable[[], object]) -> object:
    value: object = None
    for thunk in thunks:
        value = thunk()
        if not is_true(value)[0]:
            return value
    return value


def _or(*thunks: Callable[[], object]) -> object:
    value: object = None
    for thunk in thunks:
        value = thunk()
        if is_true(value)[0]:
            return value
    return value


def length(item: object) -> int:
    if item is None:  # Go's reflect panics on the zero Value
        raise FuncError("reflect: call of reflect.Value.Type on zero Value")
    if isinstance(item, str):
        return len(item.encode())
    if isinstance(item, (GoMap, QueryResult)):
        return len(item)
    raise FuncError(f"len of type {type_name(item).lstrip('*')}")


def _index_arg(index: object, size: int, what: str = "slice/array") -> int:
    if index is None:
        raise FuncError(f"cannot index {what} with nil")
    if _kind(index) not in ("int", "uint"):
        raise FuncError(f"cannot index {what} with type {type_name(index)}")
    if not 0 <= index < size:  # type: ignore[operator]
        raise FuncError(f"index out of range: {index}")
    return index  # type: ignore[return-value]


def index(item: object, *indexes: object) -> object:
    if item is None:
        raise FuncError("index of untyped nil")
    for i in indexes:
        if item is None:
            raise FuncError("index of nil pointer")
        if isinstance(item, str):
            item = GoByte(item.encode()[_index_arg(i, len(item.encode()))])
        elif isinstance(item, QueryResult):
            item = item[_index_arg(i, len(item))]
        elif isinstance(item, GoMap):
            if i is None:
                raise FuncError("value is nil; should be of type string")
            if type(i) is not str:
                raise FuncError(f"value has type {type_name(i)}; should be string")
            item = item.get(i, item.zero())
        else:
            raise FuncError(f"can't index item of type {type_name(item).lstrip('*')}")
    return item


def slice_(item: object, *indexes: object) -> object:
    if item is None:
        raise FuncError("slice of untyped nil")
    if len(indexes) > 3:
        raise FuncError(f"too many slice indexes: {len(indexes)}")
    if isinstance(item, str):
        if len(indexes) == 3:
            raise FuncError("cannot 3-index slice a string")
        data, cap = item.encode(), len(item.encode())
    elif isinstance(item, QueryResult):
        data, cap = item, len(item)
    else:
        raise FuncError(f"can't slice item of type {type_name(item)}")  # slice does not dereference
    bounds = [0, len(data)]
    for j, x in enumerate(indexes):
        bounds[j if j < 2 else 1] = _index_arg(x, cap + 1) if j < 2 else _index_arg(x, cap + 1)
    if bounds[0] > bounds[1]:
        raise FuncError(f"invalid slice index: {bounds[0]} > {bounds[1]}")
    part = data[bounds[0] : bounds[1]]
    return part.decode(errors="replace") if isinstance(part, bytes) else QueryResult(part)


def _call(fn: object, *args: object) -> object:
    if fn is None:
        raise FuncError("call of nil")
    raise FuncError(f"non-function of type {type_name(fn)}")


def _eval_args(args: tuple[object, ...]) -> str:
    if len(args) == 1 and type(args[0]) is str:
        return args[0]  # type: ignore[return-value]
    return go_sprint(*args, deref=True)


def html_escape(*args: object) -> str:
    s = _eval_args(args)
    for c, e in (("&", "&amp;"), ('"', "&#34;"), ("'", "&#39;"), ("<", "&lt;"), (">", "&gt;")):
        s = s.replace(c, e)
    return s.replace("\x00", "\ufffd")


def js_escape(*args: object) -> str:
    out = []
    for c in _eval_args(args):
        if c in "\\'\"<>&=":
            out.append({"\\": "\\\\", "'": "\\'", '"': '\\"', "<": "\\u003C", ">": "\\u003E", "&": "\\u0026", "=": "\\u003D"}[c])
        elif c < " ":
            out.append(f"\\u{ord(c):04X}")
        elif not c.isascii() and not c.isprintable():
            out.append(f"\\u{ord(c):04X}")
        else:
            out.append(c)
    return "".join(out)


def url_query_escape(*args: object) -> str:
    return quote_plus(_eval_args(args), safe="-_.~")


def go_sprintln(*args: object) -> str:
    return " ".join(go_sprint(a) for a in args) + "\n"


ANY, VALUE = "interface {}", "reflect.Value"

BUILTINS: dict[str, Function] = {
    "and": Function((VALUE, VALUE), _and, variadic=True, lazy=True),
    "or": Function((VALUE, VALUE), _or, variadic=True, lazy=True),
    "not": Function((VALUE,), lambda a: not is_true(a)[0]),
    "len": Function((VALUE,), length),
    "index": Function((VALUE, VALUE), index, variadic=True),
    "slice": Function((VALUE, VALUE), slice_, variadic=True),
    "call": Function((VALUE, VALUE), _call, variadic=True),
    "print": Function((ANY,), lambda *a: go_sprint(*a), variadic=True),
    "printf": Function(("string", ANY), go_printf, variadic=True),
    "println": Function((ANY,), go_sprintln, variadic=True),
    "html": Function((ANY,), html_escape, variadic=True),
    "js": Function((ANY,), js_escape, variadic=True),
    "urlquery": Function((ANY,), url_query_escape, variadic=True),
    "eq": Function((VALUE, VALUE), eq, variadic=True),
    "ne": Function((VALUE, VALUE), lambda a, b: not eq(a, b)),
    "lt": Function((VALUE, VALUE), lt),
    "le": Function((VALUE, VALUE), le),
    "gt": Function((VALUE, VALUE), lambda a, b: not le(a, b)),
    "ge": Function((VALUE, VALUE), lambda a, b: not lt(a, b)),
}


# --- Prometheus's functions -------------------------------------------------------------------

SAMPLE, RESULT = "*template.sample", "template.queryResult"


def _first(v: QueryResult | None) -> Sample:
    if not v:
        raise FuncError("first() called on vector with no elements")
    return v[0]


def _deref(s: Sample | None) -> Sample:
    if s is None:
        raise FuncError("runtime error: invalid memory address or nil pointer dereference")
    return s


def _args(*values: object) -> GoMap:
    return GoAnyMap({f"arg{i}": v for i, v in enumerate(values)})


def _sort_by_label(label: str, v: QueryResult | None) -> QueryResult | None:
    if v is not None:
        v.sort(key=lambda s: s.Labels.get(label, ""))  # Python's sort is stable, as sort.Stable
    return v


def graph_link(expr: str) -> str:
    return f"/graph?g0.expr={url_query_escape(expr)}&g0.tab=0"


def table_link(expr: str) -> str:
    return f"/graph?g0.expr={url_query_escape(expr)}&g0.tab=1"


class Expansion:
    """What the contextual functions need from one expansion: the engine's query function and the external URL."""

    __slots__ = ("query", "external_url")

    def __init__(self, query: Callable[[str], Iterable[tuple[Iterable[tuple[str, str]], float]]] | None, external_url: str) -> None:
        self.query, self.external_url = query, external_url


def _query(expansion: Expansion, expr: str) -> QueryResult:
    """Prometheus's ``query``: the engine's samples as ``*sample`` values."""
    if expansion.query is None:
        raise FuncError("query is not available when rendering outside a rule evaluation")
    try:
        samples = expansion.query(expr)
    except Exception as exc:  # the engine's parse or evaluation error, as Prometheus reports its own
        raise FuncError(str(exc)) from None
    return QueryResult(Sample(GoMap(labels), float(v)) for labels, v in samples)


def _external(expansion: Expansion) -> str:
    if not expansion.external_url:  # Prometheus's *url.URL is nil then (promtool without external_url)
        raise FuncError("runtime error: invalid memory address or nil pointer dereference")
    return expansion.external_url


PROMETHEUS: dict[str, Function] = {
    "query": Function(("string",), _query, contextual=True),
    "first": Function((RESULT,), _first),
    "label": Function(("string", SAMPLE), lambda name, s: _deref(s).Labels.get(name, "")),
    "value": Function((SAMPLE,), lambda s: _deref(s).Value),
    "strvalue": Function((SAMPLE,), lambda s: _deref(s).Labels.get("__value__", "")),
    "args": Function((ANY,), _args, variadic=True),
    "reReplaceAll": Function(("string", "string", "string"), re_replace_all),
    "safeHtml": Function(("string",), HTML),
    "match": Function(("string", "string"), match),
    "title": Function(("string",), _title),
    "toUpper": Function(("string",), _to_upper),
    "toLower": Function(("string",), _to_lower),
    "graphLink": Function(("string",), graph_link),
    "tableLink": Function(("string",), table_link),
    "sortByLabel": Function(("string", RESULT), _sort_by_label),
    "stripPort": Function(("string",), strip_port),
    "stripDomain": Function(("string",), strip_domain),
    "humanize": Function((ANY,), humanize),
    "humanize1024": Function((ANY,), humanize1024),
    "humanizeDuration": Function((ANY,), humanize_duration),
    "humanizePercentage": Function((ANY,), humanize_percentage),
    "humanizeTimestamp": Function((ANY,), humanize_timestamp),
    "toTime": Function((ANY,), to_time),
    "pathPrefix": Function((), lambda expansion: urlsplit(_external(expansion)).path, contextual=True),
    "externalURL": Function((), _external, contextual=True),
    "parseDuration": Function(("string",), parse_duration),
}
"""The functions Prometheus 2.42 adds (``query`` runs at the alert's evaluation time, given by the Expansion)."""

ALL_FUNCTIONS: dict[str, Function] = {**BUILTINS, **PROMETHEUS}

FUNCTIONS = frozenset(ALL_FUNCTIONS)
"""Every function name a Prometheus 2.42 alert template may use (``tmpl`` is for console templates only)."""
