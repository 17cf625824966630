"""The Go values a Prometheus template handles, as Python values, and how Go prints them.

Python's ``str``, ``float``, ``int`` and ``bool`` stand for Go's ``string``,
``float64``, ``int`` and ``bool``; ``None`` for nil / no value. The other
types a rule template can meet get a class here, so that Go's type names
(``printf "%T"``, error messages), printing and type checks come out as Go's.

>>> go_sprint(GoMap({"job": "api", "instance": "a:1"}))
'map[instance:a:1 job:api]'
>>> printable(Sample(GoMap({"__name__": "up"}), 1.0)), go_sprint(Sample(GoMap({}), 1.0))
('{map[__name__:up] 1}', '&{map[] 1}')
>>> go_sprint("a", 1, 2, "b", True)
'a1 2btrue'
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass

from detector.output.templates.gofmt import go_float


class GoMap(dict):
    """A Go ``map[string]string`` (labels); :class:`GoAnyMap` is a ``map[string]interface {}``."""

    elem = "string"  # the Go type of the values (a class attribute: building one is dict's own, fast, init)

    def zero(self) -> object:
        """The value of a missing key (Prometheus runs templates with ``missingkey=zero``)."""
        return "" if self.elem == "string" else None


class GoAnyMap(GoMap):
    """A Go ``map[string]interface {}``: what ``args`` returns."""

    elem = "interface {}"


class HTML(str):
    """``html/template.HTML``, what ``safeHtml`` returns: a string of another Go type."""


class GoByte(int):
    """A ``uint8``: what ``index`` gives for a string."""


@dataclass(eq=False)
class Sample:
    """One query result sample, Prometheus's ``*template.sample`` (fields ``Labels``, ``Value``)."""

    Labels: GoMap
    Value: float


class QueryResult(list):
    """What ``query`` returns, Prometheus's ``template.queryResult`` (a ``[]*sample``)."""


@dataclass(frozen=True)
class GoTime:
    """A ``*time.Time`` in UTC, what ``toTime`` returns, as nanoseconds since the epoch."""

    unix_ns: int

    def __str__(self) -> str:
        """``time.Time.String()``: ``2006-01-02 15:04:05.999999999 +0000 UTC``."""
        seconds, ns = divmod(self.unix_ns, 1_000_000_000)
        moment = datetime.datetime(1970, 1, 1) + datetime.timedelta(seconds=seconds)
        fraction = f".{ns:09d}".rstrip("0") if ns else ""
        return f"{moment:%Y-%m-%d %H:%M:%S}{fraction} +0000 UTC"


class AlertData:
    """The data (``.``) of an alert template: Prometheus 2.42's ``AlertTemplateData``."""

    __slots__ = ("Labels", "ExternalLabels", "ExternalURL", "Value")
    FIELDS = __slots__
    TYPE = "struct { Labels map[string]string; ExternalLabels map[string]string; ExternalURL string; Value float64 }"

    def __init__(self, labels: GoMap, external_labels: GoMap, external_url: str, value: float) -> None:
        self.Labels, self.ExternalLabels, self.ExternalURL, self.Value = labels, external_labels, external_url, value


NILABLE = ("*", "map[", "[]", "template.queryResult", "interface {}", "reflect.Value")  # Go's canBeNil


def type_name(v: object) -> str:
    """Go's name for the type of ``v`` (``%T``)."""
    if v is None:
        return "<nil>"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, GoByte):
        return "uint8"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float64"
    if isinstance(v, HTML):
        return "template.HTML"
    if isinstance(v, str):
        return "string"
    if isinstance(v, GoMap):
        return f"map[string]{v.elem}"
    if isinstance(v, Sample):
        return "*template.sample"
    if isinstance(v, QueryResult):
        return "template.queryResult"
    if isinstance(v, GoTime):
        return "*time.Time"
    if isinstance(v, AlertData):
        return AlertData.TYPE
    raise TypeError(f"not a Go template value: {v!r}")


def can_be_nil(go_type: str) -> bool:
    return go_type.startswith(NILABLE)


def go_value(v: object, top: bool = True) -> str:
    """``fmt``'s ``%v`` of one value; ``top`` False for a value inside another (pointers print as addresses)."""
    if v is None:
        return "<nil>"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return go_float(v)
    if isinstance(v, (int, str, GoTime)):
        return str(v)
    if isinstance(v, GoMap):  # fmt sorts map keys
        return "map[" + " ".join(f"{k}:{go_value(v[k], False)}" for k in sorted(v)) + "]"
    if isinstance(v, Sample):
        inner = "{" + go_value(v.Labels, False) + " " + go_float(v.Value) + "}"
        # A pointer prints as &{...} at the top level only; inside a slice Go prints its address,
        # which is no stable text: Headroom prints 0xc000 and the index instead.
        return "&" + inner if top else inner
    if isinstance(v, QueryResult):
        return "[" + " ".join(f"0xc{i:09x}" for i in range(len(v))) + "]"
    if isinstance(v, AlertData):
        return "{" + " ".join(go_value(getattr(v, f), False) for f in AlertData.FIELDS) + "}"
    raise TypeError(f"not a Go template value: {v!r}")


def go_sprint(*args: object, deref: bool = False) -> str:
    """``fmt.Sprint``: operands side by side, with a space between two that are not strings.

    ``deref`` prints pointers as a template prints a value (``{...}`` rather than ``&{...}``),
    as ``html``, ``js`` and ``urlquery`` do with their arguments.
    """
    out = []
    for i, a in enumerate(args):
        if i > 0 and not isinstance(a, str) and not isinstance(args[i - 1], str):
            out.append(" ")
        out.append(printable(a) if deref else go_value(a))
    return "".join(out)


def printable(v: object) -> str:
    """What a template prints for a value: pointers dereferenced, nothing as ``<no value>``."""
    if v is None:
        return "<no value>"
    if isinstance(v, Sample):
        return go_value(v)[1:]
    return go_value(v)


def is_true(v: object) -> tuple[bool, bool]:
    """Go's template truth of a value, and whether it has one (every value Headroom handles has one)."""
    if v is None:  # no value, a form of nil: false
        return False, True
    if isinstance(v, (str, list, dict)):
        return len(v) > 0, True
    if isinstance(v, (bool, int, float)):
        return v != 0, True
    return True, True  # a non-nil pointer or a struct


_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
# Go's layout elements, longest first where one is the prefix of another (time.Format's nextStdChunk).
_LAYOUT = (
    "January", "Jan", "Monday", "Mon", "MST", "2006", "15", "01", "02", "03", "04", "05", "06", "_2", "1", "2", "3",
    "4", "5", "PM", "pm", "-07:00:00", "-070000", "-07:00", "-0700", "-07", "Z07:00:00", "Z070000", "Z07:00",
    "Z0700", "Z07",
)


def go_time_format(t: GoTime, layout: str) -> str:
    """``time.Time.Format`` of a UTC time (Go's reference layout ``Mon Jan 2 15:04:05 MST 2006``)."""
    seconds, ns = divmod(t.unix_ns, 1_000_000_000)
    d = datetime.datetime(1970, 1, 1) + datetime.timedelta(seconds=seconds)
    hour12 = d.hour % 12 or 12
    values = {
        "January": _MONTHS[d.month - 1], "Jan": _MONTHS[d.month - 1][:3], "Monday": _DAYS[d.weekday()],
        "Mon": _DAYS[d.weekday()][:3], "MST": "UTC", "2006": f"{d.year:04d}", "15": f"{d.hour:02d}",
        "01": f"{d.month:02d}", "02": f"{d.day:02d}", "03": f"{hour12:02d}", "04": f"{d.minute:02d}",
        "05": f"{d.second:02d}", "06": f"{d.year % 100:02d}", "_2": f"{d.day:2d}", "1": str(d.month),
        "2": str(d.day), "3": str(hour12), "4": str(d.minute), "5": str(d.second),
        "PM": "PM" if d.hour >= 12 else "AM", "pm": "pm" if d.hour >= 12 else "am",
        "-07:00:00": "+00:00:00", "-070000": "+000000", "-07:00": "+00:00", "-0700": "+0000", "-07": "+00",
        "Z07:00:00": "Z", "Z070000": "Z", "Z07:00": "Z", "Z0700": "Z", "Z07": "Z",
    }
    out, i = [], 0
    while i < len(layout):
        frac = re.match(r"[.,](0+|9+)(?![0-9])", layout[i:])
        if frac:
            digits = len(frac.group(1))
            text = f"{ns:09d}"[:digits]
            if frac.group(1)[0] == "9":
                text = text.rstrip("0")
            out.append(layout[i] + text if text else "")
            i += frac.end()
            continue
        element = next((e for e in _LAYOUT if layout.startswith(e, i)), None)
        if element is None:
            out.append(layout[i])
            i += 1
            continue
        out.append(values[element])
        i += len(element)
    return "".join(out)
