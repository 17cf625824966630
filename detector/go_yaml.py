"""Typed reading of a composed YAML tree as Go's YAML libraries read it, strictly.

promtool reads rule unit-test files with go-yaml v2 (``UnmarshalStrict``) and
rule files with go-yaml v3 (``KnownFields``); both resolve anchors, aliases and
``<<`` merge keys, and refuse repeated keys, but merge differently:

* v3: a mapping's own keys win over merged ones, wherever the ``<<`` is; of a
  list of merged mappings, the first that has a key wins.
* v2 (strict): fields are set in document order, a merge at its place, so a
  merged field written after an own one overrides it (of a merge list, the
  first still wins); in a map (labels, annotations), a key set twice, merged
  or not, is an error: ``key "job" already set in map``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import yaml

from detector.durations import parse_duration

_NULLS = {"", "~", "null", "Null", "NULL"}
_FLOAT_SPECIAL = {
    ".nan": math.nan, ".NaN": math.nan, ".NAN": math.nan,
    ".inf": math.inf, ".Inf": math.inf, ".INF": math.inf,
    "+.inf": math.inf, "+.Inf": math.inf, "+.INF": math.inf,
    "-.inf": -math.inf, "-.Inf": -math.inf, "-.INF": -math.inf,
}  # fmt: skip
_YAML_FLOAT = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")
_GO_INT = re.compile(r"^[-+]?(0[xX][0-9a-fA-F]+|0[bB][01]+|0[oO][0-7]+|0[0-7]*|[1-9][0-9]*)$")


def go_yaml_float(text: str) -> float | None:
    """The float a plain YAML scalar is to go-yaml v2 (ints included); None if it is no number."""
    if text in _FLOAT_SPECIAL:
        return _FLOAT_SPECIAL[text]
    plain = text.replace("_", "")
    if text[:1] == ".":
        plain = text  # go-yaml tries only ParseFloat after a leading dot
    elif _GO_INT.match(plain):
        sign = -1 if plain[0] == "-" else 1
        digits = plain.lstrip("+-")
        if digits[:2].lower() in ("0x", "0b", "0o"):
            value = int(digits[2:], {"x": 16, "b": 2, "o": 8}[digits[1].lower()])
        elif len(digits) > 1 and digits[0] == "0":
            value = int(digits, 8)
        else:
            value = int(digits)
        if sign * value >= -(2**63) and value < 2**64:
            return float(sign * value)
    if _YAML_FLOAT.match(plain):
        value = float(plain)
        return None if math.isinf(value) else value  # ParseFloat's range error: no float
    return None


class Decoder:
    """Typed reading of a composed YAML tree, with go-yaml's strict rules (``version`` 2 or 3, see above).

    Unknown and repeated fields are errors; a scalar read as a string is its
    text; a number must be a plain (unquoted) YAML number; null is the zero value.

    >>> node = yaml.compose("{a: &a {x: '1', y: '2'}, b: {<<: *a, x: '3'}, c: {x: '3', <<: *a}}", Loader=yaml.SafeLoader)
    >>> def decode(version):
    ...     d = Decoder(version)
    ...     s = d.struct(node, {k: lambda n: d.struct(n, {"x": d.string, "y": d.string}, "xy") for k in "abc"}, "top")
    ...     return s["b"], s["c"]
    >>> decode(3)
    ({'x': '3', 'y': '2'}, {'x': '3', 'y': '2'})
    >>> decode(2)
    ({'x': '3', 'y': '2'}, {'x': '1', 'y': '2'})
    """

    def __init__(self, version: int = 3) -> None:
        self.version = version
        self.errors: list[str] = []

    def fail(self, node: yaml.Node, message: str) -> None:
        self.errors.append(f"line {node.start_mark.line + 1}: {message}")

    @staticmethod
    def is_null(node: yaml.Node | None) -> bool:
        return node is None or (
            isinstance(node, yaml.ScalarNode) and node.style is None and node.value in _NULLS
        ) or node.tag == "tag:yaml.org,2002:null"

    def string(self, node: yaml.Node | None) -> str:
        if self.is_null(node):
            return ""
        if not isinstance(node, yaml.ScalarNode):
            self.fail(node, f"cannot unmarshal {_kind(node)} into a string")
            return ""
        return node.value

    def number(self, node: yaml.Node | None) -> float:
        if self.is_null(node):
            return 0.0
        value = None
        if isinstance(node, yaml.ScalarNode) and node.style is None:
            value = go_yaml_float(node.value)
        if value is None:
            what = f"!!str `{node.value}`" if isinstance(node, yaml.ScalarNode) else _kind(node)
            self.fail(node, f"cannot unmarshal {what} into a number (write it unquoted, e.g. 0.5, 1e3, .inf)")
            return 0.0
        return value

    def duration(self, node: yaml.Node | None) -> int:
        text = self.string(node)
        if not text:
            return 0
        try:
            return parse_duration(text)
        except ValueError as exc:
            self.fail(node, str(exc))
            return 0

    def sequence(self, node: yaml.Node | None, item) -> list:
        if self.is_null(node):
            return []
        if not isinstance(node, yaml.SequenceNode):
            self.fail(node, f"cannot unmarshal {_kind(node)} into a list")
            return []
        return [item(child) for child in node.value]

    def string_map(self, node: yaml.Node | None) -> dict[str, str] | None:
        if self.is_null(node):
            return None
        if not isinstance(node, yaml.MappingNode):
            self.fail(node, f"cannot unmarshal {_kind(node)} into a map of strings")
            return {}
        out: dict[str, str] = {}
        for key, value, merged in self.pairs(node):
            name = self.string(key)
            if name in out and (not merged or self.version == 2):
                self.fail(key, f"key {name!r} already set in map")
            if name not in out:
                out[name] = self.string(value)
        return out

    def pairs(self, node: yaml.MappingNode) -> list[tuple[yaml.Node, yaml.Node, bool]]:
        """(key, value, merged) of a mapping, ``<<: *anchor`` merge keys expanded: in v3 after its own keys,
        in v2 in place (each merge list in reverse, so that its first mapping is set last)."""
        own, merged = [], []
        for key, value in node.value:
            if key.tag == "tag:yaml.org,2002:merge":
                sources = value.value if isinstance(value, yaml.SequenceNode) else [value]
                if self.version == 2:
                    sources = sources[::-1]
                expanded = []
                for source in sources:
                    if isinstance(source, yaml.MappingNode):
                        expanded += [(k, v, True) for k, v, _ in self.pairs(source)]
                    else:
                        self.fail(key, "a merge key (<<) needs a mapping or a list of mappings")
                (own if self.version == 2 else merged).extend(expanded)
            else:
                own.append((key, value, False))
        return own + merged

    def struct(self, node: yaml.Node | None, fields: Mapping[str, object], what: str) -> dict[str, object]:
        """The fields present, decoded; unknown or repeated fields are errors, as in UnmarshalStrict."""
        if self.is_null(node):
            return {}
        if not isinstance(node, yaml.MappingNode):
            self.fail(node, f"cannot unmarshal {_kind(node)} into {what}")
            return {}
        out: dict[str, object] = {}
        own: set[str] = set()
        for key, value, merged in self.pairs(node):
            name = self.string(key)
            if name not in fields:
                self.fail(key, f"field {name} not found in {what} (known: {', '.join(fields)})")
                continue
            if not merged and name in own:
                self.fail(key, f"field {name} already set in {what}")
                continue
            if not merged:
                own.add(name)
            if name not in out or self.version == 2:  # v2 sets fields in document order: the last one stays
                out[name] = fields[name](value)  # type: ignore[operator]
        return out


def _kind(node: yaml.Node) -> str:
    return {yaml.MappingNode: "!!map", yaml.SequenceNode: "!!seq"}.get(type(node), f"!!str `{getattr(node, 'value', '')}`")
