"""Go's fmt for templates: ``%v`` of a float64, ``Sprintf``, ``strconv.Quote``, label sets.

>>> go_float(1234567.0), go_printf("%.2f|%5s|%d", 0.125, "ab", 7)
('1.234567e+06', '0.12|   ab|7')
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
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


_PRINTF_VERB = re.compile(r"%([-+# 0]*)(?:\[(\d+)\])?(\d+)?(?:\.(\d*))?(?:\[(\d+)\])?(.?)", re.DOTALL)


def go_printf(fmt: str, *args: object) -> str:
    """Go's ``fmt.Sprintf`` for template values (explicit ``%[n]d`` argument indexes included).

    >>> go_printf("%g|%.3g|%x|%s|%5s|", 1234567.0, 1234567.0, 1234567.0, 3, 2.5)
    '1.234567e+06|1.23e+06|0x1.2d687p+20|%!s(int=3)|%!s(float64=  2.5)|'
    >>> go_printf("%[2]d %[1]d %d|%[5]d", 1, 2)
    '2 1 2|%!d(BADINDEX)'
    """
    out = []
    pos = 0
    next_arg, reordered = 0, False
    for m in _PRINTF_VERB.finditer(fmt):
        out.append(fmt[pos : m.start()])
        pos = m.end()
        flags, early_index, width, prec, index, verb = m.groups()
        if early_index is not None and prec is not None:  # Go refuses "%[3].2d": an index before a precision
            out.append(f"%!{verb}(BADINDEX)")
            reordered = True
            continue
        index = index if index is not None else early_index
        if index is not None:
            reordered = True
            if not 1 <= int(index) <= len(args):
                out.append(f"%!{verb}(BADINDEX)")
                continue
            next_arg = int(index) - 1
        if verb == "%":
            out.append("%")
        elif not verb:
            out.append("%!(NOVERB)")
        elif next_arg >= len(args):
            out.append(f"%!{verb}(MISSING)")
        else:
            arg = args[next_arg]
            next_arg += 1
            if verb == "v":  # with %v, + and # ask for Go syntax rather than a sign or an alternate form
                verb = "q" if "#" in flags and isinstance(arg, str) else verb
                flags = flags.replace("+", "").replace("#", "")
            out.append(_format_one(arg, flags, int(width or 0), None if prec is None else int(prec or 0), verb))
    out.append(fmt[pos:])
    if not reordered and next_arg < len(args):
        extra = args[next_arg:]
        shown = ("<nil>" if a is None else f"{_go_type(a)}={_format_one(a, '', 0, None, 'v')}" for a in extra)
        out.append("%!(EXTRA " + ", ".join(shown) + ")")
    return "".join(out)


def _go_type(a: object) -> str:
    from detector.output.templates.values import type_name  # values prints floats with go_float

    return type_name(a)


def _format_one(arg: object, flags: str, width: int, prec: int | None, verb: str) -> str:
    if verb == "T":
        return _pad(_go_type(arg), flags, width)
    if arg is None:
        return _pad("<nil>", flags, width) if verb == "v" else f"%!{verb}(<nil>)"
    if isinstance(arg, bool):
        text = _pad("true" if arg else "false", flags, width) if verb in "tv" else None
    elif isinstance(arg, float):
        text = _format_float(arg, flags, width, prec, verb)
    elif isinstance(arg, int):
        text = _format_int(arg, flags, width, prec, verb)
    elif isinstance(arg, str):
        text = _format_str(arg, flags, width, prec, verb)
    else:
        from detector.output.templates.values import AlertData, GoMap, Sample, go_value

        # Go applies the verb to each key and value of a map, each field of a struct
        if isinstance(arg, GoMap):
            parts = (f"{_format_one(k, flags, width, prec, verb)}:{_format_one(arg[k], flags, width, prec, verb)}" for k in sorted(arg))
            return "map[" + " ".join(parts) + "]"
        if isinstance(arg, (AlertData, Sample)):
            fields = AlertData.FIELDS if isinstance(arg, AlertData) else ("Labels", "Value")
            inner = " ".join(_format_one(getattr(arg, f), flags, width, prec, verb) for f in fields)
            return ("&{" if isinstance(arg, Sample) else "{") + inner + "}"
        text = _pad(go_value(arg), flags, width) if verb in "vs" else None  # samples, times: their %v
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


