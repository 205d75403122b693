"""
Go (RE2) regular expressions rewritten for Python's `re`.

The ignore rules of `wings_twisted.fs.ignore` are translated into *Go* expressions, as upstream
translates them.  Python's `re` and Go's ``regexp`` do not read every expression the same way, and
a rule line is user input (``.pteroignore``) that can put any regular-expression text into the
translated expression.  The Go expression is therefore not handed to `re` as it is:
`go_regex_to_python` parses it with Go's grammar and writes an equivalent Python expression:

* ``$`` is Go's end of text (``\\Z``; Python's ``$`` would also match before a final newline)
  and ``\\z`` is written ``\\Z``;
* ``{,n}``, ``{01}`` and other brace forms Go does not accept as repetitions are literal braces;
* Perl classes (``\\d``, ``\\s``, ``\\w``) and ``\\b`` are ASCII-only as in Go (Go's ``\\s``
  has no vertical tab); POSIX classes such as ``[[:alpha:]]`` are expanded; ``\\Q...\\E``,
  octal and ``\\x{...}`` escapes are decoded;
* zero-width assertions may be repeated (Go allows ``^*``; Python needs a group around them).

An expression Go would refuse to compile gives ``None`` (upstream then drops the rule).  Go
refuses, among others: back references (``\\1``), possessive or stacked repetitions (``a++``,
``a**``), repetition counts above 1000 (also as a product of nested counts), unknown escapes,
unbalanced groups and classes.  The few Go constructs with no Python equivalent here (Unicode
classes ``\\pL``, a negated POSIX class inside a class such as ``[[:^alpha:]]``, ``\\S`` inside a
class) also give ``None``.  These are deliberate, documented departures for inputs no real egg or
ignore file uses.

Not reproduced: Go's limits on compiled program size and on nesting height.  Python's `re`
backtracks where RE2 does not, so a hostile rule such as ``(a+)+b`` can make matching slow on a
long candidate; RE2 bindings (``google-re2``) would remove that, at the cost of a C dependency.
"""

from __future__ import annotations

__all__ = ["go_regex_to_python"]

# Go's RE2 limit on a repetition count (and on the product of nested counts).
_MAX_REPEAT = 1000
# Go's limit on the nesting of an expression; we only count groups.
_MAX_NESTING = 1000


class _Unsupported(Exception):
    """
    The Go expression is invalid, or cannot be written faithfully for Python's `re`.
    """


_PERL = {
    "d": ("0-9", False),
    "D": ("0-9", True),
    "s": ("\\t\\n\\x0c\\r\\x20", False),
    "S": ("\\t\\n\\x0c\\r\\x20", True),
    "w": ("0-9A-Za-z_", False),
    "W": ("0-9A-Za-z_", True),
}
_POSIX = {
    "alnum": "0-9A-Za-z",
    "alpha": "A-Za-z",
    "ascii": "\\x00-\\x7f",
    "blank": "\\t\\x20",
    "cntrl": "\\x00-\\x1f\\x7f",
    "digit": "0-9",
    "graph": "\\x21-\\x7e",
    "lower": "a-z",
    "print": "\\x20-\\x7e",
    "punct": "\\x21-\\x2f\\x3a-\\x40\\x5b-\\x60\\x7b-\\x7e",
    "space": "\\t\\n\\x0b\\x0c\\r\\x20",
    "upper": "A-Z",
    "word": "0-9A-Za-z_",
    "xdigit": "0-9A-Fa-f",
}
_SIMPLE_ESCAPES = {"a": "\x07", "f": "\x0c", "n": "\n", "r": "\r", "t": "\t", "v": "\x0b"}
_OCTAL = "01234567"
_HEX = "0123456789abcdefABCDEF"


def _char(c: str) -> str:
    """
    One literal character, written so that it means itself anywhere (in or out of a class).
    """
    if c.isascii() and (c.isalnum() or c in "/_,:;'\"@%=<>!"):
        return c
    code = ord(c)
    if 0x20 <= code < 0x7F:
        # Python reads a backslash before any ASCII punctuation as the character itself.
        return "\\" + c
    if code < 0x100:
        return "\\x%02x" % code
    if code < 0x10000:
        return "\\u%04x" % code
    return "\\U%08x" % code


def _parse_int(expr: str, i: int) -> tuple[int, int] | None:
    """
    Go's ``parseInt``: decimal digits without a leading zero; -1 when longer than 8 digits.
    """
    start = i
    while i < len(expr) and expr[i].isascii() and expr[i].isdigit():
        i += 1
    if i == start:
        return None
    digits = expr[start:i]
    if len(digits) >= 2 and digits[0] == "0":
        return None
    if len(digits) > 8:
        return -1, i
    return int(digits), i


def _parse_repeat(expr: str, i: int) -> tuple[int, int, int] | None:
    """
    Go's ``parseRepeat`` at ``expr[i] == "{"``: ``(min, max, end)`` with max -1 for ``{n,}``, or
    ``None`` when the brace is a literal.
    """
    parsed = _parse_int(expr, i + 1)
    if parsed is None:
        return None
    low, j = parsed
    if j >= len(expr):
        return None
    if expr[j] != ",":
        high = low
    else:
        j += 1
        if j >= len(expr):
            return None
        if expr[j] == "}":
            high = -1
        else:
            parsed = _parse_int(expr, j)
            if parsed is None:
                return None
            high, j = parsed
            if high < 0:
                low = -1
    if j >= len(expr) or expr[j] != "}":
        return None
    return low, high, j + 1


def _parse_escape(expr: str, i: int) -> tuple[str, int]:
    """
    Go's ``parseEscape`` at ``expr[i] == "\\"``: the character it denotes and the next index.
    """
    if i + 1 >= len(expr):
        raise _Unsupported("trailing backslash")
    c = expr[i + 1]
    j = i + 2
    if c.isascii() and not c.isalnum():
        return c, j
    if c in "1234567":
        # A single non-zero digit would be a back reference, which RE2 does not support.
        if j >= len(expr) or expr[j] not in _OCTAL:
            raise _Unsupported("back reference")
    if c in _OCTAL:
        value = int(c)
        for _ in range(2):
            if j < len(expr) and expr[j] in _OCTAL:
                value = value * 8 + int(expr[j])
                j += 1
            else:
                break
        return chr(value), j
    if c == "x":
        if j < len(expr) and expr[j] == "{":
            end = expr.find("}", j + 1)
            digits = expr[j + 1 : end] if end >= 0 else ""
            if not digits or any(d not in _HEX for d in digits):
                raise _Unsupported("bad \\x{}")
            value = int(digits, 16)
            if value > 0x10FFFF:
                raise _Unsupported("bad \\x{}")
            return chr(value), end + 1
        digits = expr[j : j + 2]
        if len(digits) != 2 or any(d not in _HEX for d in digits):
            raise _Unsupported("bad \\x")
        return chr(int(digits, 16)), j + 2
    if c in _SIMPLE_ESCAPES:
        return _SIMPLE_ESCAPES[c], j
    raise _Unsupported("invalid escape")


def _parse_class(expr: str, i: int) -> tuple[str, int]:
    """
    Go's ``parseClass`` at ``expr[i] == "["``: the Python class and the next index.
    """
    j = i + 1
    negated = False
    if j < len(expr) and expr[j] == "^":
        negated = True
        j += 1
    items: list[str] = []
    first = True
    while True:
        if j >= len(expr):
            raise _Unsupported("missing ]")
        if expr[j] == "]" and not first:
            j += 1
            break
        first = False
        # POSIX [:name:] and [:^name:].
        if expr.startswith("[:", j) and len(expr) - j > 2:
            end = expr.find(":]", j + 2)
            if end >= 0:
                name = expr[j + 2 : end]
                posix_negated = name.startswith("^")
                if posix_negated:
                    name = name[1:]
                if name not in _POSIX:
                    raise _Unsupported("unknown POSIX class")
                if posix_negated:
                    if name == "digit":
                        items.append("\\D")
                    elif name == "word":
                        items.append("\\W")
                    else:
                        raise _Unsupported("negated POSIX class inside a class")
                else:
                    items.append(_POSIX[name])
                j = end + 2
                continue
        if expr[j] == "\\" and j + 1 < len(expr):
            c = expr[j + 1]
            if c in "pP":
                raise _Unsupported("Unicode class")
            if c in _PERL:
                if c == "S":
                    raise _Unsupported("\\S inside a class")
                if c in "DW":
                    # With re.ASCII these are exactly Go's complements.
                    items.append("\\" + c)
                else:
                    items.append(_PERL[c][0])
                j += 2
                continue
        low, j = _class_char(expr, j)
        high = low
        if j + 1 < len(expr) and expr[j] == "-" and expr[j + 1] != "]":
            high, j = _class_char(expr, j + 1)
            if ord(high) < ord(low):
                raise _Unsupported("bad range")
        items.append(_char(low) if high == low else _char(low) + "-" + _char(high))
    return "[" + ("^" if negated else "") + "".join(items) + "]", j


def _class_char(expr: str, j: int) -> tuple[str, int]:
    """
    Go's ``parseClassChar``: one (possibly escaped) character of a class.
    """
    if j >= len(expr):
        raise _Unsupported("missing ]")
    if expr[j] == "\\":
        return _parse_escape(expr, j)
    return expr[j], j + 1


class _Atom:
    """
    One operand of a concatenation, with what the repetition rules need to know about it.
    """

    __slots__ = ("text", "weight", "repeated")

    def __init__(self, text: str, weight: int = 0, repeated: bool = False) -> None:
        self.text = text
        # Go's repeatIsValid: the largest product of nested {n,m} counts along any path.
        self.weight = weight
        self.repeated = repeated


class _Frame:
    """
    One open group: finished alternatives and the current concatenation.
    """

    __slots__ = ("alternatives", "current")

    def __init__(self) -> None:
        self.alternatives: list[list[_Atom]] = []
        self.current: list[_Atom] = []

    def close(self) -> _Atom:
        branches = self.alternatives + [self.current]
        text = "|".join("".join(atom.text for atom in branch) for branch in branches)
        weight = max((atom.weight for branch in branches for atom in branch), default=0)
        return _Atom(text, weight)


def go_regex_to_python(expr: str) -> str | None:
    """
    Rewrite a Go (RE2, Perl flags) regular expression for Python's `re` compiled with ``re.ASCII``.

    :return: the Python expression, or ``None`` when Go would refuse the expression or it has no
        faithful Python equivalent.
    """
    try:
        return _convert(expr)
    except _Unsupported:
        return None


def _convert(expr: str) -> str:
    stack = [_Frame()]
    last_repeat = False
    i = 0
    n = len(expr)
    while i < n:
        c = expr[i]
        frame = stack[-1]
        repeat_op: tuple[str, int, int] | None = None  # (python text, min, max) of a repetition
        if c == "(":
            if expr.startswith("(?", i):
                raise _Unsupported("group flags")
            if len(stack) > _MAX_NESTING:
                raise _Unsupported("nesting")
            stack.append(_Frame())
            i += 1
        elif c == "|":
            frame.alternatives.append(frame.current)
            frame.current = []
            i += 1
        elif c == ")":
            if len(stack) == 1:
                raise _Unsupported("unexpected )")
            stack.pop()
            inner = frame.close()
            stack[-1].current.append(_Atom("(" + inner.text + ")", inner.weight))
            i += 1
        elif c == "^":
            frame.current.append(_Atom("(?:^)"))
            i += 1
        elif c == "$":
            frame.current.append(_Atom("(?:\\Z)"))
            i += 1
        elif c == ".":
            frame.current.append(_Atom("."))
            i += 1
        elif c == "[":
            text, i = _parse_class(expr, i)
            frame.current.append(_Atom(text))
        elif c in "*+?":
            repeat_op = (c, -2, -2)
            i += 1
        elif c == "{":
            parsed = _parse_repeat(expr, i)
            if parsed is None:
                frame.current.append(_Atom(_char("{")))
                i += 1
            else:
                low, high, end = parsed
                if low < 0 or low > _MAX_REPEAT or high > _MAX_REPEAT or (0 <= high < low):
                    raise _Unsupported("bad repeat count")
                if high == low:
                    text = "{%d}" % (low,)
                elif high < 0:
                    text = "{%d,}" % (low,)
                else:
                    text = "{%d,%d}" % (low, high)
                repeat_op = (text, low, high)
                i = end
        elif c == "\\":
            i = _convert_escape(expr, i, frame)
        else:
            frame.current.append(_Atom(_char(c)))
            i += 1

        if repeat_op is None:
            last_repeat = False
            continue
        # A repetition: Go refuses a missing operand and stacked operators ("a**", "a++").
        if last_repeat:
            raise _Unsupported("nested repetition")
        if not frame.current:
            raise _Unsupported("missing repetition argument")
        text, low, high = repeat_op
        if i < n and expr[i] == "?":
            text += "?"
            i += 1
        atom = frame.current[-1]
        operand = "(?:" + atom.text + ")" if atom.repeated else atom.text
        weight = atom.weight
        if low != -2:
            count = high if high >= 0 else low
            if high == 0:
                weight = 0
            elif count > 0:
                weight = count * max(weight, 1)
            if (low >= 2 or high >= 2) and weight > _MAX_REPEAT:
                raise _Unsupported("repeat count product")
        frame.current[-1] = _Atom(operand + text, weight, repeated=True)
        last_repeat = True
    if len(stack) != 1:
        raise _Unsupported("missing )")
    return stack[0].close().text


def _convert_escape(expr: str, i: int, frame: _Frame) -> int:
    """
    A backslash outside a class (Go's main parse loop); appends atoms and returns the next index.
    """
    if i + 1 >= len(expr):
        raise _Unsupported("trailing backslash")
    c = expr[i + 1]
    if c == "Q":
        end = expr.find("\\E", i + 2)
        literal = expr[i + 2 :] if end < 0 else expr[i + 2 : end]
        for ch in literal:
            frame.current.append(_Atom(_char(ch)))
        return len(expr) if end < 0 else end + 2
    if c == "A":
        frame.current.append(_Atom("(?:\\A)"))
        return i + 2
    if c == "z":
        frame.current.append(_Atom("(?:\\Z)"))
        return i + 2
    if c in "bB":
        frame.current.append(_Atom("(?:\\" + c + ")"))
        return i + 2
    if c in "pP":
        raise _Unsupported("Unicode class")
    if c in _PERL:
        body, negated = _PERL[c]
        frame.current.append(_Atom("[" + ("^" if negated else "") + body + "]"))
        return i + 2
    ch, j = _parse_escape(expr, i)
    frame.current.append(_Atom(_char(ch)))
    return j
