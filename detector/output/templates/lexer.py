"""Go ``text/template``'s lexer (Go 1.19): template text into text, delimiters and action tokens.

Positions are byte offsets into the template's UTF-8 text, as Go reports them.

>>> [(t.kind, t.text) for t in lex("a {{- $x := .Labels.job | printf \\"%s\\" -}} b")]  # doctest: +NORMALIZE_WHITESPACE
[('text', 'a'), ('{{', '{{'), ('variable', '$x'), ('space', ' '), (':=', ':='), ('space', ' '),
 ('field', '.Labels'), ('field', '.job'), ('space', ' '), ('|', '|'), ('space', ' '),
 ('identifier', 'printf'), ('space', ' '), ('string', '"%s"'), ('}}', '}}'), ('text', 'b'), ('eof', '')]
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

KEYWORDS = {"block", "break", "continue", "define", "else", "end", "if", "range", "nil", "template", "with"}
_SPACE = " \t\r\n"


class LexError(Exception):
    """A template Go's lexer refuses; ``line`` is where, ``message`` Go's words."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.message, self.line = message, line


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # text, {{, }}, space, identifier, keyword name, field, variable, string, raw, char, number, bool, ...
    text: str
    pos: int  # byte offset
    line: int


def lex(text: str) -> Iterator[Token]:
    """The tokens of ``text``, ending with an ``eof`` token, or an ``error`` token (Go's message) where
    lexing fails: Go's parser reads tokens as they come, so an earlier parse error is reported first."""
    lexer = _Lexer(text)
    try:
        yield from lexer.run()
    except LexError as exc:
        yield Token("error", exc.message, len(text.encode()), exc.line)


def _alnum(c: str) -> bool:
    return c == "_" or c.isalpha() or c.isdigit()


class _Lexer:
    def __init__(self, text: str) -> None:
        self.text = text
        self.offsets = [0]  # byte offset of each character, and of the end
        for c in text:
            self.offsets.append(self.offsets[-1] + len(c.encode()))
        self.line = 1

    def tok(self, kind: str, start: int, end: int) -> Token:
        t = Token(kind, self.text[start:end], self.offsets[start], self.line)
        self.line += self.text.count("\n", start, end)
        return t

    def error(self, message: str, at: int) -> LexError:
        return LexError(message, 1 + self.text.count("\n", 0, at))

    def run(self) -> Iterator[Token]:
        text, i, n = self.text, 0, len(self.text)
        while True:
            j = text.find("{{", i)
            if j < 0:
                if i < n:
                    yield self.tok("text", i, n)
                yield Token("eof", "", self.offsets[n], self.line)
                return
            end = j
            trim_left = text.startswith("-", j + 2) and j + 3 < n and text[j + 3] in _SPACE
            if trim_left:
                end = len(text[:j].rstrip(_SPACE))
            if end > i:
                yield self.tok("text", i, end)
            self.line += text.count("\n", end, j)
            k = j + 2 + (2 if trim_left else 0)
            # A comment must follow the delimiter (and trim marker) at once and end right at the closing one.
            if text.startswith("/*", k):
                close = text.find("*/", k + 2)
                if close < 0:
                    raise self.error("unclosed comment", k)
                after = close + 2
                trim_right = text.startswith(" -}}", after) or text.startswith("\t-}}", after) or (
                    after < n and text[after] in _SPACE and text.startswith("-}}", after + 1))
                if trim_right:
                    after += 1
                if not text.startswith("}}", after) and not (trim_right and text.startswith("-}}", after)):
                    raise self.error("comment ends before closing delimiter", k)
                self.line += text.count("\n", j, after)
                i = after + (3 if trim_right else 2)
                if trim_right:
                    stripped = len(text) - len(text[i:].lstrip(_SPACE))
                    self.line += text.count("\n", i, stripped)
                    i = stripped
                continue
            yield self.tok("{{", j, j + 2)
            i = yield from self.action(k)

    def action(self, i: int) -> Iterator[Token]:
        text, n = self.text, len(self.text)
        depth = 0
        while True:
            if i >= n:
                raise self.error("unclosed action", i)
            c = text[i]
            if c in _SPACE:
                j = i
                while j < n and text[j] in _SPACE:
                    j += 1
                if text.startswith("-}}", j) and j > i:  # " -}}": the trim marker closes the action
                    if depth:
                        raise self.error("unclosed left paren", j)
                    if j - 1 > i:
                        yield self.tok("space", i, j - 1)
                    self.line += text.count("\n", j - 1, j)
                    yield self.tok("}}", j + 1, j + 3)
                    after = j + 3
                    stripped = n - len(text[after:].lstrip(_SPACE))
                    self.line += text.count("\n", after, stripped)
                    return stripped
                yield self.tok("space", i, j)
                i = j
                continue
            if text.startswith("}}", i):
                if depth:
                    raise self.error("unclosed left paren", i)
                yield self.tok("}}", i, i + 2)
                return i + 2
            if c == "=":
                yield self.tok("=", i, i + 1)
                i += 1
            elif c == ":":
                if not text.startswith(":=", i):
                    raise self.error("expected :=", i)
                yield self.tok(":=", i, i + 2)
                i += 2
            elif c == "|":
                yield self.tok("|", i, i + 1)
                i += 1
            elif c == '"':
                j = i + 1
                while True:
                    if j >= n or text[j] == "\n":
                        raise self.error("unterminated quoted string", j)
                    if text[j] == "\\" and j + 1 < n and text[j + 1] != "\n":
                        j += 2
                        continue
                    if text[j] == '"':
                        break
                    j += 1
                yield self.tok("string", i, j + 1)
                i = j + 1
            elif c == "`":
                j = text.find("`", i + 1)
                if j < 0:
                    raise self.error("unterminated raw quoted string", i)
                yield self.tok("raw", i, j + 1)
                i = j + 1
            elif c == "$":
                j = i + 1
                while j < n and _alnum(text[j]):
                    j += 1
                self.check_terminator(j)
                yield self.tok("variable", i, j)
                i = j
            elif c == "'":
                j = i + 1
                while True:
                    if j >= n or text[j] == "\n":
                        raise self.error("unterminated character constant", j)
                    if text[j] == "\\" and j + 1 < n and text[j + 1] != "\n":
                        j += 2
                        continue
                    if text[j] == "'":
                        break
                    j += 1
                yield self.tok("char", i, j + 1)
                i = j + 1
            elif c == "." and i + 1 < n and not text[i + 1].isdigit():  # at the end, Go lexes "." as a number
                j = i + 1
                while j < n and _alnum(text[j]):
                    j += 1
                self.check_terminator(j)
                yield self.tok("dot" if j == i + 1 else "field", i, j)
                i = j
            elif c in "+-." or c.isdigit():
                j = self.scan_number(i, i)
                if j < n and text[j] in "+-":  # a complex constant, 1+2i: no spaces, ends in i
                    j = self.scan_number(j, i)
                    if text[j - 1] != "i":
                        raise self.error(f'bad number syntax: "{text[i:j]}"', j)
                yield self.tok("number", i, j)
                i = j
            elif _alnum(c):
                j = i
                while j < n and _alnum(text[j]):
                    j += 1
                self.check_terminator(j)
                word = text[i:j]
                kind = word if word in KEYWORDS else "bool" if word in ("true", "false") else "identifier"
                yield self.tok(kind, i, j)
                i = j
            elif c == "(":
                depth += 1
                yield self.tok("(", i, i + 1)
                i += 1
            elif c == ")":
                depth -= 1
                yield self.tok(")", i, i + 1)
                if depth < 0:
                    raise self.error(f"unexpected right paren {_rune(c)}", i)
                i += 1
            elif c.isascii() and c.isprintable():
                yield self.tok("char_item", i, i + 1)
                i += 1
            else:
                raise self.error(f"unrecognized character in action: {_rune(c)}", i)

    def check_terminator(self, j: int) -> None:
        text = self.text
        if j >= len(text) or text[j] in _SPACE + ".,|:)(" or text.startswith("}}", j):
            return
        raise self.error(f"bad character {_rune(text[j])}", j)

    def scan_number(self, i: int, start: int) -> int:
        """Go's scanNumber: sign, base prefix, digits with _, fraction, exponent, imaginary i."""
        text, n = self.text, len(self.text)
        j = i
        if j < n and text[j] in "+-":
            j += 1
        digits = "0123456789_"
        if text.startswith(("0x", "0X"), j):
            j, digits = j + 2, "0123456789abcdefABCDEF_"
        elif text.startswith(("0o", "0O"), j):
            j, digits = j + 2, "01234567_"
        elif text.startswith(("0b", "0B"), j):
            j, digits = j + 2, "01_"
        while j < n and text[j] in digits:
            j += 1
        if j < n and text[j] == ".":
            j += 1
            while j < n and text[j] in digits:
                j += 1
        exponent = "pP" if digits.startswith("0123456789a") else "eE" if len(digits) == 11 else ""
        if exponent and j < n and text[j] in exponent:
            j += 1
            if j < n and text[j] in "+-":
                j += 1
            while j < n and text[j] in "0123456789_":
                j += 1
        if j < n and text[j] == "i":
            j += 1
        if j < n and _alnum(text[j]):
            raise self.error(f'bad number syntax: "{text[start:j + 1]}"', j)
        return j


def _rune(c: str) -> str:
    """Go's ``%#U``: ``U+0041 'A'``."""
    return f"U+{ord(c):04X} '{c}'" if c.isprintable() else f"U+{ord(c):04X}"
