"""Go ``text/template``'s parse tree and parser (Go 1.19), with Go's parse errors.

``parse(name, text, functions)`` gives the main tree and the ``{{define}}``d
ones. Node ``str()`` is Go's ``String()``, which execution errors quote.

>>> trees = parse("t", '{{ if gt $v 1.0 }}{{ $v | printf "%.1f" }}{{ else }}low{{ end }}', {"gt", "printf"}, ("$v",))
>>> str(trees["t"])
'{{if gt $v 1.0}}{{$v | printf "%.1f"}}{{else}}low{{end}}'
>>> parse("t", "{{ nope 1 }}", set())
Traceback (most recent call last):
...
detector.output.templates.parse.ParseError: template: t:1: function "nope" not defined
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from detector.output.templates.lexer import Token, lex


class ParseError(Exception):
    """A template Go refuses to parse; the message is Go's, ``template: NAME:LINE: ...``."""


# --- nodes ------------------------------------------------------------------------------------


@dataclass(eq=False)
class Node:
    pos: int


@dataclass(eq=False)
class TextNode(Node):
    text: str

    def __str__(self) -> str:
        return self.text


@dataclass(eq=False)
class DotNode(Node):
    def __str__(self) -> str:
        return "."


@dataclass(eq=False)
class NilNode(Node):
    def __str__(self) -> str:
        return "nil"


@dataclass(eq=False)
class BoolNode(Node):
    value: bool

    def __str__(self) -> str:
        return "true" if self.value else "false"


@dataclass(eq=False)
class StringNode(Node):
    quoted: str
    value: str

    def __str__(self) -> str:
        return self.quoted


@dataclass(eq=False)
class NumberNode(Node):
    """A number constant with what it can be: ``is_int`` (fits int64), ``is_float``; ``ideal`` its value as a Go constant."""

    text: str
    is_int: bool = False
    is_uint: bool = False
    is_float: bool = False
    int_value: int = 0
    float_value: float = 0.0

    def __str__(self) -> str:
        return self.text


@dataclass(eq=False)
class IdentifierNode(Node):
    name: str

    def __str__(self) -> str:
        return self.name


@dataclass(eq=False)
class VariableNode(Node):
    ident: list[str]  # "$x" then field names

    def __str__(self) -> str:
        return ".".join(self.ident)


@dataclass(eq=False)
class FieldNode(Node):
    ident: list[str]

    def __str__(self) -> str:
        return "".join("." + i for i in self.ident)


@dataclass(eq=False)
class ChainNode(Node):
    node: Node
    fields: list[str]

    def __str__(self) -> str:
        base = f"({self.node})" if isinstance(self.node, PipeNode) else str(self.node)
        return base + "".join("." + f for f in self.fields)


@dataclass(eq=False)
class CommandNode(Node):
    args: list[Node] = field(default_factory=list)

    def __str__(self) -> str:
        return " ".join(f"({a})" if isinstance(a, PipeNode) else str(a) for a in self.args)


@dataclass(eq=False)
class PipeNode(Node):
    decl: list[VariableNode] = field(default_factory=list)
    is_assign: bool = False
    cmds: list[CommandNode] = field(default_factory=list)

    def __str__(self) -> str:
        head = ", ".join(str(d) for d in self.decl) + " := " if self.decl else ""
        return head + " | ".join(str(c) for c in self.cmds)


@dataclass(eq=False)
class ActionNode(Node):
    pipe: PipeNode

    def __str__(self) -> str:
        return "{{" + str(self.pipe) + "}}"


@dataclass(eq=False)
class ListNode(Node):
    nodes: list[Node] = field(default_factory=list)

    def __str__(self) -> str:
        return "".join(str(n) for n in self.nodes)


@dataclass(eq=False)
class BranchNode(Node):
    """``if``, ``range`` or ``with`` (``keyword``)."""

    keyword: str
    pipe: PipeNode
    list: ListNode
    else_list: ListNode | None

    def __str__(self) -> str:
        out = "{{" + self.keyword + " " + str(self.pipe) + "}}" + str(self.list)
        if self.else_list is not None:
            out += "{{else}}" + str(self.else_list)
        return out + "{{end}}"


@dataclass(eq=False)
class BreakNode(Node):
    def __str__(self) -> str:
        return "{{break}}"


@dataclass(eq=False)
class ContinueNode(Node):
    def __str__(self) -> str:
        return "{{continue}}"


@dataclass(eq=False)
class TemplateNode(Node):
    name: str
    pipe: PipeNode | None

    def __str__(self) -> str:
        return "{{template " + _quote(self.name) + (" " + str(self.pipe) if self.pipe else "") + "}}"


def _quote(s: str) -> str:
    from detector.output.templates.gofmt import go_quote

    return go_quote(s)


@dataclass(eq=False)
class _End(Node):
    def __str__(self) -> str:
        return "{{end}}"


@dataclass(eq=False)
class _Else(Node):
    def __str__(self) -> str:
        return "{{else}}"


# --- constants --------------------------------------------------------------------------------

_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}


def unquote(literal: str) -> str:
    """strconv.Unquote of a string or character literal; ValueError("invalid syntax") as Go."""
    if literal[0] == "`":
        return literal[1:-1].replace("\r", "")
    quote, body = literal[0], literal[1:-1]
    out = bytearray()
    i = 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            if c == quote:
                raise ValueError("invalid syntax")
            out += c.encode()
            i += 1
            continue
        e = body[i + 1] if i + 1 < len(body) else ""
        if e in _SIMPLE_ESCAPES or e == quote:
            out += _SIMPLE_ESCAPES.get(e, e).encode()
            i += 2
        elif e == "x" and re.fullmatch(r"[0-9a-fA-F]{2}", body[i + 2 : i + 4]):
            out.append(int(body[i + 2 : i + 4], 16))
            i += 4
        elif e in "01234567" and e and re.fullmatch(r"[0-7]{3}", body[i + 1 : i + 4]) and int(body[i + 1 : i + 4], 8) < 256:
            out.append(int(body[i + 1 : i + 4], 8))
            i += 4
        elif e in ("u", "U") and e and re.fullmatch(r"[0-9a-fA-F]{%d}" % (4 if e == "u" else 8), body[i + 2 : i + (6 if e == "u" else 10)]):
            width = 4 if e == "u" else 8
            rune = int(body[i + 2 : i + 2 + width], 16)
            if rune > 0x10FFFF or 0xD800 <= rune < 0xE000:
                raise ValueError("invalid syntax")
            out += chr(rune).encode()
            i += 2 + width
        else:
            raise ValueError("invalid syntax")
    # \x and octal escapes are bytes and may spell UTF-8; bytes that are no UTF-8 become U+FFFD, as
    # they do when Prometheus sends the text on as JSON.
    return out.decode(errors="replace")


_INT_SYNTAX = re.compile(
    r"[+-]?(0[xX]_?[0-9a-fA-F](_?[0-9a-fA-F])*|0[oO]_?[0-7](_?[0-7])*|0[bB]_?[01](_?[01])*|0(_?[0-7])*|[1-9](_?[0-9])*)"
)


def _go_int(text: str) -> int | None:
    """strconv.ParseInt(text, 0, 64)'s syntax (any size): 0x, 0o, 0b, a leading 0 for octal, _ separators."""
    if not _INT_SYNTAX.fullmatch(text):
        return None
    body = text.lstrip("+-").replace("_", "")
    value = int(body, 8) if len(body) > 1 and body[0] == "0" and body[1].isdigit() else int(body, 0)
    return -value if text.startswith("-") else value


def number(pos: int, text: str, kind: str) -> NumberNode:
    """Go's parse.newNumber: what the constant can be; ValueError with Go's message if nothing."""
    n = NumberNode(pos, text)
    if kind == "char":
        try:
            rune = unquote('"' + text[1:-1].replace('\\\'', "'") + '"') if text != "'\"'" else '"'
        except ValueError:
            rune = ""
        if len(rune) != 1:
            raise ValueError(f"malformed character constant: {text}")
        n.is_int = n.is_float = True
        n.int_value, n.float_value = ord(rune), float(ord(rune))
        return n
    if text.endswith("i"):
        raise ValueError(f"complex constants are not supported: {text}")
    value = _go_int(text)
    if value is not None and -(2**63) <= value < 2**64:
        n.is_int = value < 2**63
        n.is_uint = value >= 0
        n.int_value, n.is_float, n.float_value = value, True, float(value)
        return n
    from detector.promql.go_compat import go_parse_float  # strconv.ParseFloat (detector.promql imports this package)

    f = None if re.fullmatch(r"[+-]?(inf|infinity|nan)", text, re.IGNORECASE) else go_parse_float(text)
    if f is None:
        raise ValueError(f'illegal number syntax: "{text}"')
    if not any(c in text for c in ".eEpP"):
        raise ValueError(f'integer overflow: "{text}"')
    n.is_float, n.float_value = True, f
    if f == math.floor(f) and -(2**63) <= f < 2**63:  # an integral float is an int too
        n.is_int, n.int_value = True, int(f)
    return n


# --- parser -----------------------------------------------------------------------------------


class _Parser:
    def __init__(self, name: str, text: str, functions: Iterable[str], variables: Iterable[str]) -> None:
        self.name, self.text = name, text
        self.functions = set(functions)
        self.tokens = list(lex(text))
        # A lexical error is a token like the others: Go's parser reports it only where it reaches it
        # unexpectedly, so an earlier parse error wins. It stays the last token however far one reads.
        self.tokens += [self.tokens[-1]] * 16
        self.i = self.furthest = 0
        self.action_line = 0
        self.vars = ["$", *variables]
        self.range_depth = 0
        self.trees: dict[str, ListNode] = {}

    # tokens
    def next(self) -> Token:
        t = self.tokens[self.i]
        self.i += 1
        if self.i > self.furthest:
            self.furthest = self.i
        return t

    def backup(self, n: int = 1) -> None:
        self.i -= n

    def peek(self) -> Token:
        t = self.next()
        self.i -= 1
        return t

    def next_non_space(self) -> Token:
        t = self.next()
        while t.kind == "space":
            t = self.next()
        return t

    def peek_non_space(self) -> Token:
        t = self.next_non_space()
        self.backup()
        return t

    def error(self, message: str, token: Token | None = None) -> ParseError:
        # Go reports the line of the last token it has lexed, look-ahead included, whatever the error is about.
        line = self.tokens[max(self.furthest - 1, 0)].line
        return ParseError(f"template: {self.name}:{line}: {message}")

    def expect(self, kind: str, context: str) -> Token:
        t = self.next_non_space()
        if t.kind != kind:
            raise self.unexpected(t, context)
        return t

    def unexpected(self, t: Token, context: str) -> ParseError:
        if t.kind == "error":
            extra = ""
            if self.action_line and self.action_line != t.line:
                extra = f" in action started at {self.name}:{self.action_line}"
                if t.text.endswith(" action"):
                    extra = extra[len(" in action"):]  # no "action in action"
            return self.error(t.text + extra, t)
        return self.error(f"unexpected {_describe(t)} in {context}", t)

    # structure
    def parse(self) -> dict[str, ListNode]:
        root = ListNode(0)
        while self.peek().kind != "eof":
            if self.peek().kind == "{{":
                at = self.i
                self.next()
                if self.next_non_space().kind == "define":  # (Go tracks no action line here)
                    self.parse_definition()
                    continue
                self.i = at
            node = self.text_or_action()
            if isinstance(node, (_End, _Else)):
                raise self.error(f"unexpected {node}")
            root.nodes.append(node)
        self.trees.setdefault(self.name, root)
        if self.trees[self.name] is not root:  # a {{define}} of the template's own name
            if any(not isinstance(n, TextNode) or n.text.strip() for n in root.nodes):
                raise self.error(f"template: multiple definition of template {_quote(self.name)}")
        return self.trees

    def parse_definition(self) -> None:
        name_token = self.next_non_space()
        name = self.template_name(name_token, "define clause")
        self.expect("}}", "define clause")
        saved, self.vars = self.vars, ["$"]
        body, end = self.item_list()
        if not isinstance(end, _End):
            raise self.error(f"unexpected {end} in define clause")
        self.vars = saved
        self.add_tree(name, body)

    def add_tree(self, name: str, body: ListNode) -> None:
        old = self.trees.get(name)
        if old is not None and any(not isinstance(n, TextNode) or n.text.strip() for n in old.nodes):
            if any(not isinstance(n, TextNode) or n.text.strip() for n in body.nodes):
                raise self.error(f"template: multiple definition of template {_quote(name)}")
            return
        self.trees[name] = body

    def template_name(self, t: Token, context: str) -> str:
        if t.kind in ("string", "raw"):
            try:
                return unquote(t.text)
            except ValueError:
                raise self.error("invalid syntax", t) from None
        raise self.unexpected(t, context)

    def item_list(self) -> tuple[ListNode, Node]:
        items = ListNode(self.peek_non_space().pos)
        while self.peek_non_space().kind != "eof":
            node = self.text_or_action()
            if isinstance(node, (_End, _Else)):
                return items, node
            items.nodes.append(node)
        raise self.error("unexpected EOF", self.peek())

    def text_or_action(self) -> Node:
        t = self.next_non_space()
        if t.kind == "text":
            return TextNode(t.pos, t.text)
        if t.kind == "{{":
            self.action_line = t.line
            try:
                return self.action()
            finally:
                self.action_line = 0
        raise self.unexpected(t, "input")

    def action(self) -> Node:
        t = self.next_non_space()
        kind = t.kind
        if kind == "block":
            return self.block_control()
        if kind in ("break", "continue"):
            self.expect("}}", "{{" + kind + "}}")
            if self.range_depth == 0:
                raise self.error(f"{{{{{kind}}}}} outside {{{{range}}}}")
            return BreakNode(t.pos) if kind == "break" else ContinueNode(t.pos)
        if kind == "else":
            if self.peek_non_space().kind == "if":  # "else if": the if stays for the caller
                return _Else(t.pos)
            self.expect("}}", "else")
            return _Else(t.pos)
        if kind == "end":
            self.expect("}}", "end")
            return _End(t.pos)
        if kind in ("if", "range", "with"):
            return self.control(kind, t)
        if kind == "template":
            return self.template_control(t)
        self.backup()
        return ActionNode(t.pos, self.pipeline("command", "}}"))

    def control(self, keyword: str, t: Token) -> BranchNode:
        saved = len(self.vars)
        pipe = self.pipeline(keyword, "}}")
        if keyword == "range":
            self.range_depth += 1
        body, nxt = self.item_list()
        if keyword == "range":
            self.range_depth -= 1
        else_list = None
        if isinstance(nxt, _Else):
            if keyword == "if" and self.peek_non_space().kind == "if":
                self.next_non_space()
                else_list = ListNode(nxt.pos, [self.control("if", self.tokens[self.i - 1])])
            else:
                else_list, end = self.item_list()
                if not isinstance(end, _End):
                    raise self.error(f"expected end; found {end}")
        del self.vars[saved:]
        return BranchNode(t.pos, keyword, pipe, body, else_list)

    def block_control(self) -> Node:
        t = self.next_non_space()
        name = self.template_name(t, "block clause")
        pipe = self.pipeline("block clause", "}}")
        saved, self.vars = self.vars, ["$"]
        body, end = self.item_list()
        if not isinstance(end, _End):
            raise self.error("unexpected {{else}} in block clause")
        self.vars = saved
        self.add_tree(name, body)
        return TemplateNode(t.pos, name, pipe)  # Go places it at the name

    def template_control(self, start: Token) -> Node:
        t = self.next_non_space()
        name = self.template_name(t, "template clause")
        pipe = None
        if self.next_non_space().kind != "}}":
            self.backup()
            pipe = self.pipeline("template clause", "}}")
        return TemplateNode(t.pos, name, pipe)  # Go places it at the name

    def pipeline(self, context: str, end: str) -> PipeNode:
        pipe = PipeNode(self.peek_non_space().pos)
        v = self.peek_non_space()
        while v.kind == "variable":  # declarations: $x :=, $x =, range $i, $e :=
            self.next_non_space()
            at = self.i - 1
            after = self.peek()
            nxt = self.peek_non_space()
            if nxt.kind in (":=", "="):
                pipe.is_assign = nxt.kind == "="
                self.next_non_space()
                pipe.decl.append(VariableNode(v.pos, [v.text]))
                self.vars.append(v.text)
                break
            if nxt.kind == "char_item" and nxt.text == ",":
                self.next_non_space()
                pipe.decl.append(VariableNode(v.pos, [v.text]))
                self.vars.append(v.text)
                if context == "range" and len(pipe.decl) < 2:
                    if self.peek_non_space().kind in ("variable", "}}", ")"):
                        v = self.peek_non_space()
                        continue
                    raise self.error("range can only initialize variables")
                raise self.error(f"too many declarations in {context}")
            self.i = at
            break
        while True:
            t = self.next_non_space()
            if t.kind == end:
                self.check_pipeline(pipe, context)
                return pipe
            if t.kind in ("bool", "char", "dot", "field", "identifier", "number", "nil", "raw", "string", "variable", "("):
                self.backup()
                pipe.cmds.append(self.command())
            else:
                raise self.unexpected(t, context)

    def check_pipeline(self, pipe: PipeNode, context: str) -> None:
        if not pipe.cmds:
            raise self.error(f"missing value for {context}")
        for i, c in enumerate(pipe.cmds[1:]):
            if isinstance(c.args[0], (BoolNode, DotNode, NilNode, NumberNode, StringNode)):
                raise self.error(f"non executable command in pipeline stage {i + 2}")

    def command(self) -> CommandNode:
        cmd = CommandNode(self.peek_non_space().pos)
        while True:
            self.peek_non_space()
            operand = self.operand()
            if operand is not None:
                cmd.args.append(operand)
            t = self.next()
            if t.kind == "space":
                continue
            if t.kind in ("}}", ")"):
                self.backup()
            elif t.kind != "|":
                raise self.unexpected(t, "operand")
            break
        if not cmd.args:
            raise self.error("empty command")
        return cmd

    def operand(self) -> Node | None:
        node = self.term()
        if node is None:
            return None
        if self.peek().kind == "field":
            chain_pos = self.peek().pos  # Go places the combined node at its first added field
            fields = []
            while self.peek().kind == "field":
                fields.append(self.next().text[1:])
            if isinstance(node, FieldNode):
                return FieldNode(chain_pos, node.ident + fields)
            if isinstance(node, VariableNode):
                return VariableNode(chain_pos, node.ident + fields)
            if isinstance(node, (BoolNode, StringNode, NumberNode, NilNode, DotNode)):
                raise self.error(f"unexpected . after term {_quote(str(node))}")
            return ChainNode(chain_pos, node, fields)
        return node

    def term(self) -> Node | None:
        t = self.next_non_space()
        k = t.kind
        if k == "identifier":
            if t.text not in self.functions:
                raise self.error(f'function "{t.text}" not defined', t)
            return IdentifierNode(t.pos, t.text)
        if k == "dot":
            return DotNode(t.pos)
        if k == "nil":
            return NilNode(t.pos)
        if k == "variable":
            if t.text not in self.vars:
                raise self.error(f'undefined variable "{t.text}"', t)
            return VariableNode(t.pos, [t.text])
        if k == "field":
            return FieldNode(t.pos, [t.text[1:]])
        if k == "bool":
            return BoolNode(t.pos, t.text == "true")
        if k in ("char", "number"):
            try:
                return number(t.pos, t.text, k)
            except ValueError as exc:
                raise self.error(str(exc), t) from None
        if k == "(":
            return self.pipeline("parenthesized pipeline", ")")
        if k in ("string", "raw"):
            try:
                return StringNode(t.pos, t.text, unquote(t.text))
            except ValueError:
                raise self.error("invalid syntax", t) from None
        self.backup()
        return None


_KEYWORD_ITEMS = {"block", "break", "continue", "dot", "define", "else", "end", "if", "nil", "range", "template", "with"}


def _describe(t: Token) -> str:
    """Go's item String() in ``unexpected X in Y`` messages."""
    if t.kind == "eof":
        return "EOF"
    if t.kind in _KEYWORD_ITEMS:
        return f"<{t.text}>"
    if len(t.text) > 10:
        return _quote(t.text[:10]) + "..."
    return _quote(t.text)


def parse(name: str, text: str, functions: Iterable[str], variables: Iterable[str] = ()) -> dict[str, ListNode]:
    """The trees of a template: ``name``'s and each ``{{define}}``'s; ParseError as Go words it."""
    return _Parser(name, text, functions, variables).parse()
