"""Countdown arithmetic: a bounded parser, exact evaluation and one canonical form.

Untrusted model text is parsed by a small recursive-descent parser (never ``eval``) over
integer literals, ``+ - * /`` and parentheses, and evaluated with exact
``fractions.Fraction`` arithmetic. The grammar is the usual one (left-associative,
``*``/``/`` bind tighter than ``+``/``-``), with no unary minus::

    expr   := term (('+' | '-') term)*
    term   := factor (('*' | '/') factor)*
    factor := NUMBER | '(' expr ')'

Accepted characters: ASCII digits, ``+ - * / ( )`` and ASCII spaces, plus three aliases
that are mapped before parsing: ``×`` → ``*``, ``÷`` → ``/``, ``−`` (U+2212) → ``-``.
Anything else (letters such as ``x``, newlines, emoji, full-width or other non-ASCII digits)
is ``bad_char``. Literals are ASCII digit runs without leading zeros (``0`` itself is allowed).

Canonical form (so that answers can be counted exactly; DESIGN.md §6):

* chains of ``+`` are flattened into one n-ary sum and chains of ``*`` into one n-ary product,
  and their operands are sorted: numbers first in ascending value, then compound operands by
  their canonical text. So ``(3+5)*7``, ``7*(5+3)`` and ``7*(3+5)`` all become ``7*(3+5)``, and
  ``1+(2+3)`` becomes ``1+2+3``.
* nothing else is rewritten: ``-`` and ``/`` stay binary and keep their operand order, and no
  algebra crosses operators. ``a-(b-c)``, ``a-b+c`` and ``a+c-b`` are three different forms, as
  are ``a*(b/c)`` and ``a*b/c``; redundant parentheses are dropped.
* the text uses the fewest parentheses that re-parse to the same canonical tree, so canonical
  text re-parses to itself (idempotent) and distinct canonical trees have distinct texts.

Cost: :func:`parse` takes a number of Python steps and an amount of memory linear in the length
of the text (up to the ``n log n`` of sorting chain operands). It gathers each ``+``/``*`` chain in
a list and sorts it once when the chain ends, and a tree built by :func:`parse` works out its
canonical text, value and literal multiset only when asked for them (text only for the root, and
for compound operands that must be sorted against each other; such a text is dropped again once
its parent's text holds it). The one superlinear part is C-level copying: in bracket-free sums of
products (``2*3+4*5-2*3+...``) each level's sort key copies the text below it, about n²/16 bytes
in all (6 MB, a millisecond, at 10,000 characters), never held at once. Building a chain one
operand at a time with :func:`combine` (re-sorting the chain and re-writing its text, value and
multiset at every step) made a long answer quadratic: a second and up to 140 MB for 10,000
characters. :func:`combine` keeps that eager style for the small trees of the enumeration.
"""

from __future__ import annotations

from fractions import Fraction

ALIASES = {"×": "*", "÷": "/", "−": "-"}
_ALLOWED = frozenset("0123456789+-*/() ") | frozenset(ALIASES)
_DIGITS = frozenset("0123456789")
_UNSET = object()  # a lazily computed field not computed yet (None is a real value: division by zero)


class ExprError(ValueError):
    """Why a text is not a valid expression; ``reason`` is a verifier reason code."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class Expr:
    """A canonical expression tree (immutable; compare and hash by canonical text).

    ``op`` is ``"n"`` for a literal, ``"+"``/``"*"`` for a flattened sorted n-ary chain, or
    ``"-"``/``"/"`` for a binary node. ``value`` is the exact value, or None when a division
    by zero occurs anywhere inside. ``numbers`` is the sorted multiset of literals.
    Build instances with :func:`leaf` and :func:`combine`, which keep every tree canonical.
    """

    __slots__ = ("op", "args", "_value", "_numbers", "_text")

    def __init__(self, op: str, args: tuple["Expr", ...], value: Fraction | None | object = _UNSET,
                 numbers: tuple[int, ...] | None = None, text: str | None = None):
        # value/numbers/text may be left out: they are then computed on first access (see `parse`).
        self.op, self.args, self._value, self._numbers, self._text = op, args, value, numbers, text

    @property
    def value(self) -> Fraction | None:
        if self._value is _UNSET:
            _evaluate(self)
        return self._value  # type: ignore[return-value]

    @property
    def numbers(self) -> tuple[int, ...]:
        if self._numbers is None:
            leaves, stack = [], [self]
            while stack:  # iterative: an unbracketed chain such as 1-1-1-... nests thousands deep
                e = stack.pop()
                if e._numbers is not None:
                    leaves.extend(e._numbers)
                else:
                    stack.extend(e.args)
            self._numbers = tuple(sorted(leaves))
        return self._numbers

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = _render(self)
        return self._text

    @property
    def key(self) -> tuple:
        """Operand order inside a sorted chain: numbers by value, then compounds by text."""
        return (0, self._numbers[0], "") if self.op == "n" else (1, 0, self.text)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Expr) and self.text == other.text

    def __hash__(self) -> int:
        return hash(self.text)

    def __repr__(self) -> str:
        return f"Expr({self.text!r})"


def leaf(n: int) -> Expr:
    """A literal ``n`` (a non-negative int)."""
    return Expr("n", (), Fraction(n), (n,), str(n))


def _wrap(e: Expr, ops: str) -> str:
    return f"({e.text})" if e.op in ops else e.text


# Which operands need brackets (see `combine` for why): inside a sum a '-' term; inside a product a
# '+', '-' or '/' factor; the right operand of '-' when it is '+'/'-'; either side of '/' as below.
_INNER = {"+": "-", "*": "+-/"}


def _pieces(e: Expr) -> list:
    """The canonical text of ``e`` as a list of strings and operand trees (rendered by `_render`)."""
    def wrapped(a: Expr, ops: str) -> tuple:
        return ("(", a, ")") if a.op in ops else (a,)

    if e.op in _INNER:
        out: list = []
        for i, a in enumerate(e.args):
            if i:
                out.append(e.op)
            out.extend(wrapped(a, _INNER[e.op]))
        return out
    a, b = e.args
    if e.op == "-":
        return [a, "-", *wrapped(b, "+-")]
    return [*wrapped(a, "+-"), "/", *wrapped(b, "+-*/")]


def _render(root: Expr) -> str:
    """Canonical text of ``root`` in one pass over the nodes whose text is not known yet.

    Iterative (an unbracketed chain such as ``1-1-1-...`` nests thousands deep). The cached text
    of an inner node met on the way is used and then dropped, since ``root``'s text now holds it:
    so cached texts never nest and hold at most one copy of the answer, where caching every
    inner node's text would hold O(length × depth) characters.
    """
    out: list[str] = []
    stack: list = [root]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            out.append(item)
        elif item._text is not None:
            out.append(item._text)
            if item.op != "n":  # only parse-built trees reach here: combine() sets every text eagerly
                item._text = None
        else:
            stack.extend(reversed(_pieces(item)))
    return "".join(out)


def _evaluate(root: Expr) -> None:
    """Fill in ``_value`` for ``root`` and every node below it that lacks one (iterative post-order)."""
    stack: list[tuple[Expr, bool]] = [(root, False)]
    while stack:
        e, children_done = stack.pop()
        if e._value is not _UNSET:
            continue
        if not children_done:
            stack.append((e, True))
            stack.extend((a, False) for a in e.args if a._value is _UNSET)
            continue
        vals = [a._value for a in e.args]
        if any(v is None for v in vals) or (e.op == "/" and vals[1] == 0):
            e._value = None
            continue
        acc = vals[0]
        for v in vals[1:]:
            acc = _apply(e.op, acc, v)
        e._value = acc


def _apply(op: str, x: Fraction, y: Fraction) -> Fraction:
    if op == "+":
        return x + y
    if op == "-":
        return x - y
    if op == "*":
        return x * y
    return x / y  # callers rule out y == 0


def combine(op: str, a: Expr, b: Expr) -> Expr:
    """The canonical tree of ``a op b`` for canonical ``a``, ``b`` and ``op`` in ``+-*/``."""
    if op not in ("+", "-", "*", "/"):
        raise ValueError(f"unknown operator {op!r}")
    if a.value is None or b.value is None or (op == "/" and b.value == 0):
        value = None
    else:
        value = _apply(op, a.value, b.value)
    numbers = tuple(sorted(a.numbers + b.numbers))
    if op in "+*":
        # Flatten associative chains, then sort the commutative operands.
        parts = (a.args if a.op == op else (a,)) + (b.args if b.op == op else (b,))
        parts = tuple(sorted(parts, key=lambda e: e.key))
        # A '-' term inside a sum, or a '+', '-' or '/' factor inside a product, needs
        # parentheses: without them it would re-parse as a different (left-nested) tree.
        inner = "-" if op == "+" else "+-/"
        return Expr(op, parts, value, numbers, op.join(_wrap(p, inner) for p in parts))
    if op == "-":
        text = a.text + "-" + _wrap(b, "+-")
    else:
        text = _wrap(a, "+-") + "/" + _wrap(b, "+-*/")
    return Expr(op, (a, b), value, numbers, text)


class _Chain:
    """A ``+`` or ``*`` chain still being gathered by the parser (sorted once, in `_close`)."""

    __slots__ = ("op", "parts")

    def __init__(self, op: str, parts: list[Expr]):
        self.op, self.parts = op, parts


def _close(x: Expr | _Chain) -> Expr:
    """The canonical tree of a finished chain: numbers by value, then compound operands by text."""
    if isinstance(x, Expr):
        return x
    nums = sorted((p for p in x.parts if p.op == "n"), key=lambda p: p._numbers[0])
    comps = [p for p in x.parts if p.op != "n"]
    if len(comps) > 1:  # texts are needed (and built) only when compounds must be ordered
        comps.sort(key=lambda p: p.text)
    return Expr(x.op, tuple(nums + comps))


def _operands(op: str, x: Expr | _Chain) -> list[Expr]:
    """The operands ``x`` contributes to an ``op`` chain: its own operands when it is one (flattening)."""
    if isinstance(x, _Chain):
        return x.parts if x.op == op else [_close(x)]
    return list(x.args) if x.op == op else [x]


def _extend(op: str, node: Expr | _Chain, rhs: Expr | _Chain) -> _Chain:
    if not (isinstance(node, _Chain) and node.op == op):
        node = _Chain(op, _operands(op, node))
    node.parts.extend(_operands(op, rhs))
    return node


class _Parser:
    """Recursive descent over a token list; recursion depth is bounded by ``max_depth``.

    ``+``/``*`` chains are gathered as `_Chain` lists and closed (sorted) once, when an operator
    of another kind or the end of the enclosing expression needs the finished tree.
    """

    def __init__(self, tokens: list[str | int], max_depth: int):
        self.tokens, self.pos, self.max_depth = tokens, 0, max_depth

    def peek(self) -> str | int | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def expr(self, depth: int) -> Expr | _Chain:
        node = self.term(depth)
        while self.peek() in ("+", "-"):
            op = self.tokens[self.pos]
            self.pos += 1
            rhs = self.term(depth)
            node = _extend("+", node, rhs) if op == "+" else Expr("-", (_close(node), _close(rhs)))
        return node

    def term(self, depth: int) -> Expr | _Chain:
        node = self.factor(depth)
        while self.peek() in ("*", "/"):
            op = self.tokens[self.pos]
            self.pos += 1
            rhs = self.factor(depth)
            node = _extend("*", node, rhs) if op == "*" else Expr("/", (_close(node), _close(rhs)))
        return node

    def factor(self, depth: int) -> Expr | _Chain:
        tok = self.peek()
        if isinstance(tok, int):
            self.pos += 1
            return leaf(tok)
        if tok == "(":
            if depth + 1 > self.max_depth:
                raise ExprError("too_deep", f"parentheses nested deeper than {self.max_depth}")
            self.pos += 1
            node = self.expr(depth + 1)
            if self.peek() != ")":
                raise ExprError("parse_error", f"expected ')' at token {self.pos}")
            self.pos += 1
            return node
        found = "end of input" if tok is None else repr(tok)
        raise ExprError("parse_error", f"expected a number or '(' but found {found}")


def tokenize(text: str, *, max_digits: int = 100) -> list[str | int]:
    """Tokens of ``text`` (aliases mapped, spaces dropped); raises ExprError on bad input.

    A literal longer than ``max_digits`` digits is ``big_number``: it is never a given number, and
    Python's ``int()`` refuses strings past 4300 digits anyway.
    """
    for ch in text:
        if ch not in _ALLOWED:
            raise ExprError("bad_char", f"character {ch!r} (U+{ord(ch):04X}) is not allowed")
    tokens: list[str | int] = []
    i, n = 0, len(text)
    while i < n:
        ch = ALIASES.get(text[i], text[i])
        if ch in _DIGITS:
            j = i
            while j < n and text[j] in _DIGITS:
                j += 1
            if j - i > max_digits:
                raise ExprError("big_number", f"a number with {j - i} digits (max {max_digits})")
            digits = text[i:j]
            if len(digits) > 1 and digits[0] == "0":
                raise ExprError("parse_error", f"number {digits!r} has a leading zero")
            tokens.append(int(digits))  # ASCII digits only (checked above), so int() is exact
            i = j
            continue
        if ch != " ":
            tokens.append(ch)
        i += 1
    return tokens


def parse(text: str, *, max_chars: int = 64, max_depth: int = 8, max_digits: int = 100) -> Expr:
    """Parse untrusted ``text`` into a canonical :class:`Expr`, in time linear in its length.

    Checks run cheapest first: length (``too_long``, on the stripped text, before looking at
    any character, so huge inputs are rejected in O(1)), characters (``bad_char``), then, while
    reading numbers, ``big_number`` (a literal longer than ``max_digits``) and leading zeros
    (``parse_error``), then grammar (``parse_error``) and parenthesis depth (``too_deep``).
    Division by zero is *not* an error here (the tree gets ``value=None``) so that such answers
    still have a canonical form. The tree's ``text``, ``value`` and ``numbers`` are computed on
    first access (see the module docstring).

    Args:
        text: the candidate expression.
        max_chars: longest accepted stripped text.
        max_depth: deepest accepted parenthesis nesting.
        max_digits: longest accepted number literal.
    Raises:
        ExprError: with ``reason`` in ``too_long``, ``bad_char``, ``big_number``, ``parse_error``,
        ``too_deep``.
    """
    text = text.strip(" ")
    if len(text) > max_chars:
        raise ExprError("too_long", f"expression has {len(text)} characters (max {max_chars})")
    tokens = tokenize(text, max_digits=max_digits)
    if not tokens:
        raise ExprError("parse_error", "empty expression")
    parser = _Parser(tokens, max_depth)
    node = parser.expr(0)
    if parser.pos != len(tokens):
        raise ExprError("parse_error", f"unexpected {tokens[parser.pos]!r} at token {parser.pos}")
    return _close(node)


def canonicalize(text: str, *, max_chars: int = 64, max_depth: int = 8) -> str:
    """Canonical text of the expression ``text`` (see the module docstring for the rules).

    Raises:
        ExprError: when ``text`` does not parse (see :func:`parse`).
    """
    return parse(text, max_chars=max_chars, max_depth=max_depth).text


def format_value(v: Fraction) -> str:
    """``7``, ``-2`` or ``8/3``: how scratchpads write an exact value."""
    return str(v.numerator) if v.denominator == 1 else f"{v.numerator}/{v.denominator}"


def _operand(v: Fraction) -> str:
    # Fractions and negatives are bracketed when they are operands, so that a step such as
    # 8/(1/3)=24 reads unambiguously.
    text = format_value(v)
    return text if v.denominator == 1 and v >= 0 else f"({text})"


def steps(e: Expr) -> list[str]:
    """The step equations that compute ``e`` bottom-up, e.g. ``['3+5=8', '7*8=56']``.

    Compound operands are computed left to right in canonical order, then combined; an n-ary
    chain is folded from the left (``1+2+3`` gives ``1+2=3,3+3=6``). Operands that are
    fractions or negative are bracketed (``8/(3-8/3)`` gives ``8/3=8/3,3-(8/3)=1/3,8/(1/3)=24``).
    Raises ValueError when ``e`` divides by zero.
    """
    if e.value is None:
        raise ValueError(f"{e.text} divides by zero")
    out: list[str] = []
    for a in e.args:
        if a.op != "n":
            out.extend(steps(a))
    if e.op == "n":
        return out
    acc = e.args[0].value
    for a in e.args[1:]:
        res = _apply(e.op, acc, a.value)
        out.append(f"{_operand(acc)}{e.op}{_operand(a.value)}={format_value(res)}")
        acc = res
    return out
