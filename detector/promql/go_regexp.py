"""Go regular expressions (RE2 syntax) as Python ones, and Go's ``Regexp.Expand``.

PromQL's ``label_replace`` takes a Go regular expression and a ``$1``
template; :func:`go_regexp` translates the expression to Python's ``re``
(matching the same strings, or refused where Go refuses it or Python cannot
express it) and :func:`go_expand` fills the template as Go does.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache


def _is_name_char(ch: str) -> bool:
    category = unicodedata.category(ch)
    return category[0] == "L" or category == "Nd" or ch == "_"


def go_expand(template: str, match: re.Match[str]) -> str:
    """``template`` with ``$1``, ``${1}``, ``$name`` and ``${name}`` replaced, as Go's Regexp.Expand does.

    ``$$`` is a dollar sign; a name is the longest run of letters, digits and
    ``_`` (so ``$1x`` is group "1x"); an unknown or unmatched group is empty; a
    ``$`` that starts no valid reference is kept as it is.

    >>> m = re.fullmatch(r"(?P<host>[a-z]+)-(\\d+)", "db-12")
    >>> go_expand("$host/$2 ${1}x $1x $$ $ ${2", m)
    'db/12 dbx  $ $ ${2'
    """
    out: list[str] = []
    i, n = 0, len(template)
    while i < n:
        dollar = template.find("$", i)
        if dollar < 0:
            out.append(template[i:])
            break
        out.append(template[i:dollar])
        i = dollar + 1
        if i < n and template[i] == "$":
            out.append("$")
            i += 1
            continue
        brace = i < n and template[i] == "{"
        j = i + 1 if brace else i
        k = j
        while k < n and _is_name_char(template[k]):
            k += 1
        name = template[j:k]
        if not name or (brace and (k >= n or template[k] != "}")):
            out.append("$")  # malformed: the $ is text
            continue
        i = k + 1 if brace else k
        out.append(_group_text(match, name))
    return "".join(out)


def _group_text(match: re.Match[str], name: str) -> str:
    group: int | str | None
    if all("0" <= ch <= "9" for ch in name) and len(name) < 9 and not (name[0] == "0" and len(name) > 1):
        group = int(name)
        if group > match.re.groups:
            return ""
    else:
        group = name if name in match.re.groupindex else None
        if group is None:
            return ""
    return match.group(group) or ""



# --- Go regular expressions (RE2 syntax) as Python ones. ------------------------------------------

_PERL_CLASSES = {"d": "0-9", "s": "\\t\\n\\f\\r ", "w": "0-9A-Za-z_"}
_POSIX_CLASSES = {
    "alnum": "0-9A-Za-z",
    "alpha": "A-Za-z",
    "ascii": "\\x00-\\x7f",
    "blank": "\\t ",
    "cntrl": "\\x00-\\x1f\\x7f",
    "digit": "0-9",
    "graph": "!-~",
    "lower": "a-z",
    "print": " -~",
    "punct": "!-/:-@\\[-`{-~",
    "space": "\\t\\n\\v\\f\\r ",
    "upper": "A-Z",
    "word": "0-9A-Za-z_",
    "xdigit": "0-9A-Fa-f",
}
_WORD = "[0-9A-Za-z_]"
_ASSERTIONS = {
    "A": "\\A",
    "z": "\\Z",
    "b": f"(?:(?<={_WORD})(?!{_WORD})|(?<!{_WORD})(?={_WORD}))",
    "B": f"(?:(?<={_WORD})(?={_WORD})|(?<!{_WORD})(?!{_WORD}))",
}
_CONTROL_ESCAPES = {"a": "\a", "f": "\f", "t": "\t", "n": "\n", "r": "\r", "v": "\v"}
_REPEAT = re.compile(r"\{([0-9]+)(?:(,)([0-9]*))?\}")
_FLAGS = re.compile(r"\(\?([imsU]*)(?:(-)([imsU]*))?([:)])")
_GROUP_NAME = re.compile(r"\(\?P<([A-Za-z0-9_]+)>")


def _char(code: int) -> str:
    """A code point as a Python regex escape, valid in and out of classes."""
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _literal(ch: str) -> str:
    return ch if ch.isascii() and ch.isalnum() else _char(ord(ch))


class _GoRegexTranslator:
    """One pass over a Go regular expression, writing the Python one that matches the same strings.

    Differences handled: Go's ``\\d \\s \\w \\b`` are ASCII; ``$`` outside
    multi-line mode is the end of the text only; ``(?i)`` in mid-pattern lasts
    to the end of its group; ``x{,n}`` is literal; POSIX classes ``[[:alpha:]]``;
    ``\\Q...\\E``; ``\\x{...}`` and octal escapes. What Go refuses (look-around,
    back-references, repeats over 1000, nested repeats) is refused; so is what
    Python cannot express (``\\pL``, ``(?U)``).
    """

    def __init__(self, pattern: str) -> None:
        self.src = pattern
        self.i = 0
        self.out: list[str] = []
        # Per open group: whether multi-line mode is on, and the inline flag
        # scopes opened in it (closed at its end and around each "|").
        self.groups: list[tuple[bool, list[str]]] = [(False, [])]
        self.after_repeat = False  # a repeat just ended: another one would be nested

    def translate(self) -> str:
        while self.i < len(self.src):
            self._step()
        if len(self.groups) > 1:
            raise ValueError("missing closing )")
        self.out.append(")" * len(self.groups[-1][1]))
        return "".join(self.out)

    def _emit(self, text: str, repeat: bool = False) -> None:
        self.out.append(text)
        self.after_repeat = repeat

    def _step(self) -> None:
        src, i = self.src, self.i
        ch = src[i]
        if ch in "*+?" or (ch == "{" and _REPEAT.match(src, i)):
            self._repeat()
        elif ch == "\\":
            self._escape()
        elif ch == "[":
            self._class()
        elif ch == "(":
            self._open()
        elif ch == ")":
            if len(self.groups) == 1:
                raise ValueError("unexpected )")
            _, scopes = self.groups.pop()
            self._emit(")" * len(scopes) + ")")
            self.i += 1
        elif ch == "|":
            scopes = self.groups[-1][1]
            self._emit(")" * len(scopes) + "|" + "".join(f"(?{s}:" for s in scopes))
            self.i += 1
        elif ch == "$":
            self._emit("$" if self.groups[-1][0] else "\\Z")
            self.i += 1
        elif ch in ".^":
            self._emit(ch)
            self.i += 1
        else:
            self._emit(_literal(ch))
            self.i += 1

    def _repeat(self) -> None:
        if self.after_repeat:
            raise ValueError(f"invalid nested repetition operator at {self.src[self.i:]!r}")
        src = self.src
        bounds = _REPEAT.match(src, self.i)
        if bounds:
            low = int(bounds[1])
            high = low if not bounds[2] else (int(bounds[3]) if bounds[3] else -1)
            if low > 1000 or high > 1000 or (high >= 0 and low > high):
                raise ValueError(f"invalid repeat count {bounds[0]}")
            text, self.i = bounds[0], bounds.end()
        else:
            text, self.i = src[self.i], self.i + 1
        if self.i < len(src) and src[self.i] == "?":
            text += "?"
            self.i += 1
        self._emit(text, repeat=True)

    def _open(self) -> None:
        src, i = self.src, self.i
        multiline, _ = self.groups[-1]
        if not src.startswith("(?", i):
            self.groups.append((multiline, []))
            self._emit("(")
            self.i += 1
            return
        named = _GROUP_NAME.match(src, i)
        if named:
            if named[1][0].isdigit():
                raise ValueError(f"group name {named[1]!r} is not supported")
            self.groups.append((multiline, []))
            self._emit(named[0])
            self.i = named.end()
            return
        flags = _FLAGS.match(src, i)
        if not flags:
            raise ValueError(f"invalid or unsupported group or flags at {src[i:i + 6]!r}")
        on, minus, off, end = flags[1], flags[2], flags[3] or "", flags[4]
        if minus and not off:
            raise ValueError(f"missing flags after - in {flags[0]!r}")
        if "U" in on + off:
            raise ValueError("the U (ungreedy) flag is not supported")
        self.i = flags.end()
        if "m" in on:
            multiline = True
        if "m" in off:
            multiline = False
        spec = on + (f"-{off}" if off else "")
        if end == ":":
            self.groups.append((multiline, []))
            self._emit(f"(?{spec}:" if spec else "(?:")
        else:  # (?i) sets flags to the end of the group: an extra scope
            scopes = self.groups[-1][1]
            self.groups[-1] = (multiline, scopes)
            if spec:
                scopes.append(spec)
                self._emit(f"(?{spec}:")

    def _escape(self) -> None:
        src = self.src
        if self.i + 1 >= len(src):
            raise ValueError("trailing backslash at end of expression")
        c = src[self.i + 1]
        if c in _PERL_CLASSES or c.lower() in _PERL_CLASSES:
            self.i += 2
            self._emit(f"[{'^' if c.isupper() else ''}{_PERL_CLASSES[c.lower()]}]")
        elif c in _ASSERTIONS:
            self.i += 2
            self._emit(_ASSERTIONS[c])
        elif c == "Q":
            end = src.find("\\E", self.i + 2)
            text = src[self.i + 2 :] if end < 0 else src[self.i + 2 : end]
            self.i = len(src) if end < 0 else end + 2
            if text:
                self._emit("".join(_literal(ch) for ch in text))  # a repeat after it takes its last character
        else:
            self._emit(_char(self._escaped_char()))

    def _escaped_char(self) -> int:
        """The code point of an escape that stands for one character (in or out of a class)."""
        src = self.src
        c = src[self.i + 1]
        self.i += 2
        if c in _CONTROL_ESCAPES:
            return ord(_CONTROL_ESCAPES[c])
        if c == "x":
            hexa = re.compile(r"\{([0-9A-Fa-f]+)\}|([0-9A-Fa-f]{2})").match(src, self.i)
            if not hexa or int(hexa[1] or hexa[2], 16) > 0x10FFFF:
                raise ValueError("invalid escape sequence \\x")
            self.i = hexa.end()
            return int(hexa[1] or hexa[2], 16)
        if c in "01234567":
            digits = re.compile(r"[0-7]{0,2}").match(src, self.i)[0]  # type: ignore[index]
            if c != "0" and not digits:
                raise ValueError(f"invalid escape sequence \\{c} (back-references are not supported)")
            self.i += len(digits)
            return int(c + digits, 8)
        if c.isascii() and not c.isalnum():
            return ord(c)  # escaped punctuation is itself
        raise ValueError(f"invalid or unsupported escape sequence \\{c}")

    def _class(self) -> None:
        src = self.src
        self.i += 1
        parts = ["["]
        if self.i < len(src) and src[self.i] == "^":
            parts.append("^")
            self.i += 1
        first = True
        while True:
            if self.i >= len(src):
                raise ValueError("missing closing ]")
            if src[self.i] == "]" and not first:
                self.i += 1
                break
            first = False
            if src.startswith("[:", self.i):
                end = src.find(":]", self.i + 2)
                name = src[self.i + 2 : end] if end >= 0 else ""
                if name in _POSIX_CLASSES:
                    parts.append(_POSIX_CLASSES[name])
                    self.i = end + 2
                    continue
                if end >= 0:  # Go refuses an unknown [:name:]
                    raise ValueError(f"invalid or unsupported character class [:{name}:]")
            if src.startswith("\\", self.i) and self.i + 1 < len(src):
                c = src[self.i + 1]
                if c in _PERL_CLASSES:
                    parts.append(_PERL_CLASSES[c])
                    self.i += 2
                    continue
                if c.lower() in _PERL_CLASSES or c in "pP":
                    raise ValueError(f"\\{c} inside brackets is not supported")
            low = self._class_char()
            if src.startswith("-", self.i) and self.i + 1 < len(src) and src[self.i + 1] != "]":
                self.i += 1
                high = self._class_char()
                if high < low:
                    raise ValueError("invalid character class range")
                parts.append(f"{_char(low)}-{_char(high)}")
            else:
                parts.append(_char(low))
        parts.append("]")
        self._emit("".join(parts))

    def _class_char(self) -> int:
        if self.src[self.i] == "\\":
            if self.i + 1 >= len(self.src):
                raise ValueError("trailing backslash at end of expression")
            return self._escaped_char()
        self.i += 1
        return ord(self.src[self.i - 1])


@lru_cache(maxsize=1024)
def go_regexp(pattern: str) -> re.Pattern[str]:
    """A Go (RE2 syntax) regular expression compiled as Python's ``re``, matching the same strings.

    Raises ValueError for what Go refuses and for the few things Python cannot
    express. Group numbers and names are kept, so ``$1`` means the same.

    >>> go_regexp(r"(\\w+)\\s*$").pattern
    '([0-9A-Za-z_]+)[\\\\t\\\\n\\\\f\\\\r ]*\\\\Z'
    >>> bool(go_regexp("a{,2}").fullmatch("a{,2}")), bool(go_regexp("a(?i)b|c").fullmatch("C"))
    (True, True)
    >>> go_regexp("(?=x)")
    Traceback (most recent call last):
    ...
    ValueError: invalid or unsupported group or flags at '(?=x)'
    """
    translated = _GoRegexTranslator(pattern).translate()
    try:
        return re.compile(translated)
    except re.error as exc:
        raise ValueError(str(exc)) from None
