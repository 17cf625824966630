"""Go ``text/template``'s executor (Go 1.19): walks a parse tree over Go values.

Functions are :class:`Function` entries: Go's parameter types decide how
constants and values are passed (and which errors Go reports), so a template
fails where Go's fails, with Go's message. Prometheus runs templates with
``missingkey=zero``: a missing map key gives the map's zero value.

>>> from detector.output.templates.parse import parse
>>> from detector.output.templates.functions import FUNCTIONS
>>> trees = parse("t", "{{ range $k, $v := . }}{{ $k }}={{ $v }};{{ end }}", FUNCTIONS)
>>> execute(trees, "t", GoMap({"b": "2", "a": "1"}), FUNCTIONS)
'a=1;b=2;'
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from detector.output.templates.parse import (
    ActionNode, BoolNode, BranchNode, BreakNode, ChainNode, CommandNode, ContinueNode, DotNode, FieldNode,
    IdentifierNode, ListNode, NilNode, Node, NumberNode, PipeNode, StringNode, TemplateNode, TextNode, VariableNode,
)
from detector.output.templates.values import (
    AlertData, GoMap, GoTime, Sample, can_be_nil, go_time_format, is_true, printable, type_name,
)

MAX_DEPTH = 100_000  # Go's maxExecDepth


class ExecError(Exception):
    """A template that fails while running; the message is Go's ``template: NAME:LINE:COL: executing ...``."""


class FuncError(Exception):
    """What a template function returns as its error (Go prefixes ``error calling NAME: ``)."""


@dataclass(frozen=True)
class Function:
    """A template function: Go parameter types (``variadic``: the last repeats) and the Python body.

    ``lazy`` functions (``and``, ``or``) get a thunk per argument, as Go 1.18+ evaluates them lazily;
    ``contextual`` ones get the expansion's context (query function, external URL) first.
    """

    params: tuple[str, ...]
    body: Callable[..., object]
    variadic: bool = False
    lazy: bool = False
    contextual: bool = False


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


_MISSING = object()


class _State:
    def __init__(self, name: str, text: str, trees: dict[str, ListNode], functions: dict[str, Function], context: object) -> None:
        self.name, self.text, self.trees, self.functions, self.context = name, text, trees, functions, context
        self.executing = name  # the template being run: the main one, or a {{define}}d one it calls
        self.vars: list[tuple[str, object]] = []
        self.node: Node | None = None
        self.depth = 0
        self.out: list[str] = []

    # errors
    def error(self, message: str) -> ExecError:
        if self.node is None:
            return ExecError(f"template: {self.name}: {message}")
        before = self.text.encode()[: self.node.pos]
        line = 1 + before.count(b"\n")
        newline = before.rfind(b"\n")
        col = self.node.pos if newline < 0 else self.node.pos - newline - 1
        return ExecError(f'template: {self.name}:{line}:{col}: executing "{self.executing}" at <{self.node}>: {message}')

    # variables
    def mark(self) -> int:
        return len(self.vars)

    def pop(self, mark: int) -> None:
        del self.vars[mark:]

    def push(self, name: str, value: object) -> None:
        self.vars.append((name, value))

    def set_var(self, name: str, value: object) -> None:
        for i in range(len(self.vars) - 1, -1, -1):
            if self.vars[i][0] == name:
                self.vars[i] = (name, value)
                return
        raise self.error(f"undefined variable: {name}")

    def set_top(self, n: int, value: object) -> None:
        self.vars[len(self.vars) - n] = (self.vars[len(self.vars) - n][0], value)

    def var(self, name: str) -> object:
        for i in range(len(self.vars) - 1, -1, -1):
            if self.vars[i][0] == name:
                return self.vars[i][1]
        raise self.error(f"undefined variable: {name}")

    # walking
    def walk(self, dot: object, node: Node) -> None:
        self.node = node
        kind = type(node)  # exact types, most frequent first: rendering is on the evaluation path
        if kind is TextNode:
            self.out.append(node.text)  # type: ignore[attr-defined]
        elif kind is ActionNode:
            value = self.pipeline(dot, node.pipe)  # type: ignore[attr-defined]
            if not node.pipe.decl:  # type: ignore[attr-defined]
                self.node = node
                self.out.append(value if type(value) is str else printable(value))
        elif kind is ListNode:
            out = self.out
            for n in node.nodes:  # type: ignore[attr-defined]
                if type(n) is TextNode:
                    out.append(n.text)  # type: ignore[attr-defined]
                else:
                    self.walk(dot, n)
        elif kind is BranchNode:
            if node.keyword == "range":  # type: ignore[attr-defined]
                self.walk_range(dot, node)  # type: ignore[arg-type]
            else:
                self.walk_if_or_with(dot, node)  # type: ignore[arg-type]
        elif kind is BreakNode:
            raise _Break
        elif kind is ContinueNode:
            raise _Continue
        elif kind is TemplateNode:
            self.walk_template(dot, node)  # type: ignore[arg-type]
        else:
            raise self.error(f"unknown node: {node}")

    def print_value(self, value: object) -> None:
        self.out.append(printable(value))

    def walk_if_or_with(self, dot: object, node: BranchNode) -> None:
        mark = self.mark()
        try:
            value = self.pipeline(dot, node.pipe)
            truth, ok = is_true(value)
            if not ok:
                raise self.error(f"if/with can't use {printable(value) if value is not None else '<nil>'}")
            if truth:
                self.walk(value if node.keyword == "with" else dot, node.list)
            elif node.else_list is not None:
                self.walk(dot, node.else_list)
        finally:
            self.pop(mark)

    def walk_range(self, dot: object, node: BranchNode) -> None:
        self.node = node
        mark = self.mark()
        try:
            value = self.pipeline(dot, node.pipe)
            if isinstance(value, Sample):  # indirect: a pointer to a struct cannot be ranged over either
                raise self.error(f"range can't iterate over {printable(value)}")
            items: list[tuple[object, object]]
            if isinstance(value, GoMap):
                items = [(k, value[k]) for k in sorted(value)]
            elif isinstance(value, list):
                items = list(enumerate(value))
            elif value is None:
                items = []
            else:
                raise self.error(f"range can't iterate over {printable(value)}")
            for key, elem in items:
                inner = self.mark()
                if node.pipe.decl:
                    if node.pipe.is_assign:
                        if len(node.pipe.decl) > 1:
                            self.set_var(node.pipe.decl[0].ident[0], key)
                            self.set_var(node.pipe.decl[1].ident[0], elem)
                        else:
                            self.set_var(node.pipe.decl[0].ident[0], elem)
                    else:
                        self.set_top(1, elem) if len(node.pipe.decl) == 1 else (self.set_top(2, key), self.set_top(1, elem))
                try:
                    self.walk(elem, node.list)
                except _Continue:
                    pass
                except _Break:
                    self.pop(inner)
                    break
                self.pop(inner)
            else:
                if not items and node.else_list is not None:
                    self.walk(dot, node.else_list)
        finally:
            self.pop(mark)

    def walk_template(self, dot: object, node: TemplateNode) -> None:
        self.node = node
        tree = self.trees.get(node.name)
        if tree is None:
            raise self.error(f'template "{node.name}" not defined')
        if self.depth >= MAX_DEPTH:
            raise self.error(f"exceeded maximum template depth ({MAX_DEPTH})")
        value = self.pipeline(dot, node.pipe)  # variables it declares stay, as in Go
        saved_vars, saved_executing = self.vars, self.executing
        self.vars, self.executing = [("$", value)], node.name
        self.depth += 1
        try:
            self.walk(value, tree)
        except RecursionError:  # Python's stack ends before Go's 100,000 calls: report Go's error
            self.node = node
            raise self.error(f"exceeded maximum template depth ({MAX_DEPTH})") from None
        finally:
            self.vars, self.executing, self.depth = saved_vars, saved_executing, self.depth - 1

    # evaluation
    def pipeline(self, dot: object, pipe: PipeNode | None) -> object:
        if pipe is None:
            return None
        self.node = pipe
        value: object = _MISSING
        for cmd in pipe.cmds:
            value = self.command(dot, cmd, value)
        for var in pipe.decl:
            if pipe.is_assign:
                self.set_var(var.ident[0], value)
            else:
                self.push(var.ident[0], value)
        return value

    def not_a_function(self, args: Sequence[Node], final: object) -> None:
        if len(args) > 1 or final is not _MISSING:
            raise self.error(f"can't give argument to non-function {args[0]}")

    def command(self, dot: object, cmd: CommandNode, final: object) -> object:
        first = cmd.args[0]
        kind = type(first)
        if kind is VariableNode:
            return self.variable_node(dot, first, cmd.args, final)  # type: ignore[arg-type]
        if kind is IdentifierNode:
            return self.function(dot, first, cmd, cmd.args, final)  # type: ignore[arg-type]
        if kind is FieldNode:
            return self.field_node(dot, first, cmd.args, final)  # type: ignore[arg-type]
        if kind is ChainNode:
            return self.chain_node(dot, first, cmd.args, final)  # type: ignore[arg-type]
        if kind is PipeNode:
            self.not_a_function(cmd.args, final)
            return self.pipeline(dot, first)  # type: ignore[arg-type]
        self.node = first
        self.not_a_function(cmd.args, final)
        if isinstance(first, BoolNode):
            return first.value
        if isinstance(first, DotNode):
            return dot
        if isinstance(first, NilNode):
            raise self.error("nil is not a command")
        if isinstance(first, NumberNode):
            return self.ideal_constant(first)
        if isinstance(first, StringNode):
            return first.value
        raise self.error(f"can't evaluate command {first}")

    def ideal_constant(self, n: NumberNode) -> object:
        self.node = n
        text = n.text
        hex_int = len(text) > 2 and text.lstrip("+-")[:2] in ("0x", "0X") and not any(c in text for c in "pP")
        if n.is_float and not hex_int and not text.startswith("'") and any(c in text for c in ".eEpP"):
            return n.float_value
        if n.is_int:
            return n.int_value
        if n.is_uint:
            raise self.error(f"{text} overflows int")
        return None

    def field_node(self, dot: object, node: FieldNode, args: Sequence[Node], final: object) -> object:
        self.node = node
        return self.field_chain(dot, dot, node, node.ident, args, final)

    def chain_node(self, dot: object, chain: ChainNode, args: Sequence[Node], final: object) -> object:
        self.node = chain
        if not chain.fields:
            raise self.error("internal error: no fields in evalChainNode")
        if isinstance(chain.node, NilNode):
            raise self.error(f"indirection through explicit nil in {chain}")
        pipe = self.arg(dot, "interface {}", chain.node)
        return self.field_chain(dot, pipe, chain, chain.fields, args, final)

    def variable_node(self, dot: object, var: VariableNode, args: Sequence[Node], final: object) -> object:
        self.node = var
        value = self.var(var.ident[0])
        if len(var.ident) == 1:
            self.not_a_function(args, final)
            return value
        return self.field_chain(dot, value, var, var.ident[1:], args, final)

    def field_chain(self, dot: object, receiver: object, node: Node, ident: list[str], args: Sequence[Node], final: object) -> object:
        for name in ident[:-1]:
            receiver = self.field(dot, name, node, [], _MISSING, receiver)
        return self.field(dot, ident[-1], node, args, final, receiver)

    def field(self, dot: object, name: str, node: Node, args: Sequence[Node], final: object, receiver: object) -> object:
        if receiver is None:
            return None  # Go: a field of nothing is nothing (nil data) with missingkey=zero
        has_args = len(args) > 1 or final is not _MISSING
        if isinstance(receiver, GoMap):  # maps have no methods; the common case ($labels.x) first
            if has_args:
                raise self.error(f"{name} is not a method but has arguments")
            return receiver.get(name, receiver.zero())
        method = _METHODS.get((type(receiver), name))
        if method is not None:
            return self.call(dot, method, False, node, name, args or [node], final, receiver)
        if isinstance(receiver, (AlertData, Sample)):
            fields = AlertData.FIELDS if isinstance(receiver, AlertData) else ("Labels", "Value")
            if name in fields:
                if has_args:
                    raise self.error(f"{name} has arguments but cannot be invoked as function")
                return getattr(receiver, name)
            struct = AlertData.TYPE if isinstance(receiver, AlertData) else "template.sample"
            raise self.error(f"can't evaluate field {name} in type {struct if isinstance(receiver, AlertData) else '*' + struct}")
        raise self.error(f"can't evaluate field {name} in type {type_name(receiver)}")

    def function(self, dot: object, node: IdentifierNode, cmd: CommandNode, args: Sequence[Node], final: object) -> object:
        self.node = node
        fn = self.functions.get(node.name)
        if fn is None:
            raise self.error(f'"{node.name}" is not a defined function')
        return self.call(dot, fn, True, cmd, node.name, args, final)

    def call(self, dot: object, fn: Function, is_builtin: bool, node: Node, name: str, args: Sequence[Node],
             final: object, receiver: object = _MISSING) -> object:
        given = max(len(args) - 1, 0) + (final is not _MISSING)
        fixed = len(fn.params) - 1 if fn.variadic else len(fn.params)
        if fn.variadic and given < fixed:
            raise self.error(f"wrong number of args for {name}: want at least {fixed} got {given}")
        if not fn.variadic and given != fixed:
            raise self.error(f"wrong number of args for {name}: want {fixed} got {given}")

        params, last = fn.params, len(fn.params) - 1
        if fn.lazy:
            thunks: list[Callable[[], object]] = [
                lambda a=a, i=i: self.arg(dot, params[min(i, last)], a) for i, a in enumerate(args[1:])
            ]
            if final is not _MISSING:
                thunks.append(lambda: final)
            values = thunks
        else:
            values = [self.arg(dot, params[min(i, last)], a) for i, a in enumerate(args[1:])]
            if final is not _MISSING:
                values.append(self.validate(final, params[min(len(values), last)]))
        if fn.contextual:
            values.insert(0, self.context)
        try:
            return fn.body(*values) if receiver is _MISSING else fn.body(receiver, *values)
        except FuncError as exc:
            self.node = node
            raise self.error(f"error calling {name}: {exc}") from None

    def arg(self, dot: object, typ: str, n: Node) -> object:
        self.node = n
        kind = type(n)
        if kind is VariableNode:
            return self.validate(self.variable_node(dot, n, [], _MISSING), typ)  # type: ignore[arg-type]
        if kind is StringNode and typ in ("string", "interface {}", "reflect.Value"):
            return n.value  # type: ignore[attr-defined]
        if isinstance(n, DotNode):
            return self.validate(dot, typ)
        if isinstance(n, NilNode):
            if can_be_nil(typ):
                return None
            raise self.error(f"cannot assign nil to {typ}")
        if isinstance(n, FieldNode):
            return self.validate(self.field_node(dot, n, [n], _MISSING), typ)
        if isinstance(n, VariableNode):
            return self.validate(self.variable_node(dot, n, [], _MISSING), typ)
        if isinstance(n, PipeNode):
            return self.validate(self.pipeline(dot, n), typ)
        if isinstance(n, IdentifierNode):
            return self.validate(self.function(dot, n, CommandNode(n.pos, [n]), [n], _MISSING), typ)
        if isinstance(n, ChainNode):
            return self.validate(self.chain_node(dot, n, [], _MISSING), typ)
        if typ == "bool":
            if isinstance(n, BoolNode):
                return n.value
            raise self.error(f"expected bool; found {n}")
        if typ == "float64":
            if isinstance(n, NumberNode) and n.is_float:
                return n.float_value
            raise self.error(f"expected float; found {n}")
        if typ == "int":
            if isinstance(n, NumberNode) and n.is_int:
                return n.int_value
            raise self.error(f"expected integer; found {n}")
        if typ == "string":
            if isinstance(n, StringNode):
                return n.value
            raise self.error(f"expected string; found {n}")
        if typ in ("interface {}", "reflect.Value"):
            if isinstance(n, BoolNode):
                return n.value
            if isinstance(n, NumberNode):
                return self.ideal_constant(n)
            if isinstance(n, StringNode):
                return n.value
        raise self.error(f"can't handle {n} for arg of type {typ}")

    def validate(self, value: object, typ: str) -> object:
        if typ in ("interface {}", "reflect.Value"):
            return value
        if value is None:
            if can_be_nil(typ):
                return None
            raise self.error(f"invalid value; expected {typ}")
        got = type_name(value)
        if got == typ:
            return value
        if got == "*" + typ:  # a pointer where its value is wanted
            return value
        raise self.error(f"wrong type for value; expected {typ}; got {got}")


# Methods templates call on what toTime returns (a *time.Time, always UTC here).
_METHODS: dict[tuple[type, str], Function] = {
    (GoTime, "Format"): Function(("string",), go_time_format),
    (GoTime, "Unix"): Function((), lambda t: t.unix_ns // 1_000_000_000),
    (GoTime, "UnixMilli"): Function((), lambda t: t.unix_ns // 1_000_000),
    (GoTime, "UnixMicro"): Function((), lambda t: t.unix_ns // 1_000),
    (GoTime, "UnixNano"): Function((), lambda t: t.unix_ns),
    (GoTime, "String"): Function((), str),
    (GoTime, "UTC"): Function((), lambda t: t),
    (GoTime, "Year"): Function((), lambda t: int(go_time_format(t, "2006"))),
    (GoTime, "Day"): Function((), lambda t: int(go_time_format(t, "2"))),
    (GoTime, "Hour"): Function((), lambda t: int(go_time_format(t, "15"))),
    (GoTime, "Minute"): Function((), lambda t: int(go_time_format(t, "4"))),
    (GoTime, "Second"): Function((), lambda t: int(go_time_format(t, "5"))),
    (GoTime, "Nanosecond"): Function((), lambda t: t.unix_ns % 1_000_000_000),
}


def execute(trees: dict[str, ListNode], name: str, data: object, functions: dict[str, Function],
            variables: Sequence[tuple[str, object]] = (), text: str = "", context: object = None) -> str:
    """Run template ``name`` over ``data`` (``text`` is its source, for error positions); ExecError as Go words it.

    ``context`` goes to the contextual functions (Prometheus's query and external URL).
    """
    state = _State(name, text, trees, functions, context)
    state.vars = [("$", data), *variables]
    state.walk(data, trees[name])
    return "".join(state.out)
