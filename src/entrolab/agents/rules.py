"""A tiny rule language for gathering-game policies: tokenizer, parser, printer, interpreter.

The model writes a policy as text; this module turns it into a tree and runs it, never ``eval``.
Setup after "Cooperation and Exploitation in LLM Policy Synthesis for Sequential Social Dilemmas"
(see docs/agents/synthesis.md), where the LLM writes Python; a char-level tiny model writes this
instead, and the sandbox is the grammar itself: there are no loops, no calls, no assignment.

Grammar (EBNF; words are lower case, tokens are separated by spaces where two words meet)::

    policy  = rule { ";" rule } [ ";" ] ;
    rule    = [ "if" cond "then" ] action ;          (* no "if": the rule always fires *)
    cond    = conj { "or" conj } ;
    conj    = neg { "and" neg } ;
    neg     = "not" neg | "(" cond ")" | compare ;
    compare = number_term cmp number_term | "last" eqop act_term | act_term eqop "last" ;
    cmp     = "lt" | "le" | "gt" | "ge" | "eq" | "ne" ;
    eqop    = "eq" | "ne" ;
    number_term = number | "stock" | "me" | "other" | "tick" ;
    act_term    = action | "none" ;
    action  = "gather" | "wait" | "punish" ;
    number  = digit { digit } ;                       (* at most 3 digits *)

The comparison words stand in for ``< <= > >= = !=`` because a policy travels inside a
``<policy>...</policy>`` tag whose body may not contain ``<`` or ``>``. Observables at each tick:
``stock`` (apples in the shared patch), ``me`` / ``other`` (apples gathered so far by this agent /
the other one), ``tick`` (0-based), ``last`` (the other agent's previous action; ``none`` at tick 0).

Semantics: the rules are tried in order; the first whose condition holds gives the action; when
none fires the agent waits. ``and`` / ``or`` short-circuit. Every node the interpreter visits is
one step; a decision that needs more than ``max_steps`` steps raises (bounded programs cannot
loop, so the limit is a second fence, and it bounds the cost of evaluating untrusted text).

Errors: :class:`RuleError` with ``kind`` (``empty``, ``too_long``, ``bad_char``, ``big_number``,
``unknown_word``, ``syntax``, ``type``, ``too_many_rules``, ``too_deep``, ``step_limit``) and
``pos``, the 0-based character position in the policy text (for ``step_limit``: of the rule
being evaluated). ``str(err)`` is ``"at POS: MESSAGE"``, what the environment shows the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

ACTIONS = ("gather", "wait", "punish")
#: Values of ``last``: an action, or ``none`` before the other agent has acted.
LAST_VALUES = ACTIONS + ("none",)
NUMBER_VARS = ("stock", "me", "other", "tick")
CMP_OPS = ("lt", "le", "gt", "ge", "eq", "ne")
KEYWORDS = ("if", "then", "and", "or", "not", "last") + CMP_OPS + NUMBER_VARS + LAST_VALUES
MAX_CHARS = 200
MAX_RULES = 8
MAX_DEPTH = 6
MAX_STEPS = 256
MAX_DIGITS = 3
_WORD_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz")
_DIGITS = frozenset("0123456789")
_SPACE = frozenset(" \t\n")


class RuleError(ValueError):
    """A policy that does not parse, type-check or run; ``pos`` is a 0-based character index."""

    def __init__(self, kind: str, pos: int, msg: str):
        super().__init__(f"at {pos}: {msg}")
        self.kind, self.pos, self.msg = kind, pos, msg


@dataclass(frozen=True)
class Token:
    """``kind``: ``word``, ``num``, ``;``, ``(``, ``)`` or ``end``; ``text`` as written; ``pos`` its index."""

    kind: str
    text: str
    pos: int


def tokenize(text: str, *, max_chars: int = MAX_CHARS) -> list[Token]:
    """Split ``text`` into tokens (a hand-written scanner); the last token is ``end``."""
    if len(text) > max_chars:
        raise RuleError("too_long", max_chars, f"policy longer than {max_chars} characters")
    out: list[Token] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c in _SPACE:
            i += 1
        elif c in ";()":
            out.append(Token(c, c, i))
            i += 1
        elif c in _WORD_CHARS or c in _DIGITS:
            chars = _WORD_CHARS if c in _WORD_CHARS else _DIGITS
            j = i
            while j < len(text) and text[j] in chars:
                j += 1
            word = text[i:j]
            if chars is _DIGITS:
                if len(word) > MAX_DIGITS:
                    raise RuleError("big_number", i, f"number {word[:8]} has more than {MAX_DIGITS} digits")
                out.append(Token("num", word, i))
            else:
                if word not in KEYWORDS and word not in ACTIONS:
                    raise RuleError("unknown_word", i, f"unknown word {word[:12]!r}")
                out.append(Token("word", word, i))
            i = j
        else:
            raise RuleError("bad_char", i, f"bad character {c!r}")
    out.append(Token("end", "", len(text)))
    return out


# ------------------------------------------------------------------ syntax tree
@dataclass(frozen=True)
class Num:
    value: int


@dataclass(frozen=True)
class Var:
    name: str  # one of NUMBER_VARS, or "last"


@dataclass(frozen=True)
class Lit:
    name: str  # one of LAST_VALUES


@dataclass(frozen=True)
class Cmp:
    op: str
    left: Union[Num, Var, Lit]
    right: Union[Num, Var, Lit]


@dataclass(frozen=True)
class Not:
    arg: "Cond"


@dataclass(frozen=True)
class BoolOp:
    op: str  # "and" | "or"
    args: tuple["Cond", ...]


Cond = Union[Cmp, Not, BoolOp]


@dataclass(frozen=True)
class Rule:
    cond: Cond | None  # None: always fires
    action: str
    pos: int  # where the rule starts in the source text


@dataclass(frozen=True)
class Policy:
    rules: tuple[Rule, ...]


def _show(tok: Token) -> str:
    return "end of policy" if tok.kind == "end" else repr(tok.text)


class _Parser:
    """Recursive descent over the token list; one method per grammar rule."""

    def __init__(self, tokens: list[Token], *, max_rules: int, max_depth: int):
        self.toks, self.i = tokens, 0
        self.max_rules, self.max_depth = max_rules, max_depth

    @property
    def tok(self) -> Token:
        return self.toks[self.i]

    def _is(self, text: str) -> bool:
        return self.tok.text == text  # callers pass words or punctuation, never digits or ""

    def _expect(self, text: str) -> None:
        if not self._is(text):
            raise RuleError("syntax", self.tok.pos, f"expected {text!r}, got {_show(self.tok)}")
        self.i += 1

    def policy(self) -> Policy:
        if self.tok.kind == "end":
            raise RuleError("empty", 0, "empty policy")
        rules = [self.rule()]
        while self._is(";"):
            self.i += 1
            if self.tok.kind == "end":  # a trailing ';' is allowed
                break
            if len(rules) == self.max_rules:
                raise RuleError("too_many_rules", self.tok.pos, f"more than {self.max_rules} rules")
            rules.append(self.rule())
        if self.tok.kind != "end":
            raise RuleError("syntax", self.tok.pos, f"expected ';' or end of policy, got {_show(self.tok)}")
        return Policy(tuple(rules))

    def rule(self) -> Rule:
        pos = self.tok.pos
        cond = None
        if self._is("if"):
            self.i += 1
            cond = self.cond(0)
            self._expect("then")
        return Rule(cond, self.action(), pos)

    def action(self) -> str:
        if self.tok.kind == "word" and self.tok.text in ACTIONS:
            self.i += 1
            return self.toks[self.i - 1].text
        raise RuleError("syntax", self.tok.pos, f"expected an action ({', '.join(ACTIONS)}), got {_show(self.tok)}")

    def cond(self, depth: int) -> Cond:
        args = [self.conj(depth)]
        while self._is("or"):
            self.i += 1
            args.append(self.conj(depth))
        return args[0] if len(args) == 1 else BoolOp("or", tuple(args))

    def conj(self, depth: int) -> Cond:
        args = [self.neg(depth)]
        while self._is("and"):
            self.i += 1
            args.append(self.neg(depth))
        return args[0] if len(args) == 1 else BoolOp("and", tuple(args))

    def neg(self, depth: int) -> Cond:
        if self._is("not") or self._is("("):
            if depth == self.max_depth:  # bounds the recursion of both parser and interpreter
                raise RuleError("too_deep", self.tok.pos, f"more than {self.max_depth} nested 'not' or '('")
            if self._is("not"):
                self.i += 1
                return Not(self.neg(depth + 1))
            self.i += 1
            inner = self.cond(depth + 1)
            self._expect(")")
            return inner
        return self.compare()

    def term(self) -> Union[Num, Var, Lit]:
        tok = self.tok
        if tok.kind == "num":
            self.i += 1
            return Num(int(tok.text))
        if tok.kind == "word" and (tok.text in NUMBER_VARS or tok.text == "last"):
            self.i += 1
            return Var(tok.text)
        if tok.kind == "word" and tok.text in LAST_VALUES:
            self.i += 1
            return Lit(tok.text)
        raise RuleError("syntax", tok.pos, f"expected a number, observable or action, got {_show(tok)}")

    def compare(self) -> Cmp:
        start = self.tok.pos
        left = self.term()
        op_tok = self.tok
        if not (op_tok.kind == "word" and op_tok.text in CMP_OPS):
            raise RuleError("syntax", op_tok.pos, f"expected a comparison ({', '.join(CMP_OPS)}), got {_show(op_tok)}")
        self.i += 1
        right = self.term()
        kinds = {_kind(left), _kind(right)}
        if kinds == {"num"}:
            return Cmp(op_tok.text, left, right)
        if kinds != {"last", "act"}:
            raise RuleError("type", start, f"cannot compare {_word(left)} with {_word(right)} "
                            "(compare numbers with numbers, or last with an action or none)")
        if op_tok.text not in ("eq", "ne"):
            raise RuleError("type", op_tok.pos, f"actions compare only with eq or ne, not {op_tok.text}")
        return Cmp(op_tok.text, left, right)


def _kind(t: Union[Num, Var, Lit]) -> str:
    if isinstance(t, Num) or (isinstance(t, Var) and t.name != "last"):
        return "num"
    return "last" if isinstance(t, Var) else "act"


def _word(t: Union[Num, Var, Lit]) -> str:
    return str(t.value) if isinstance(t, Num) else t.name


def parse_policy(text: str, *, max_chars: int = MAX_CHARS, max_rules: int = MAX_RULES,
                 max_depth: int = MAX_DEPTH) -> Policy:
    """Parse untrusted policy text; raises :class:`RuleError` (kind + position) on any fault.

    Args:
        text: the policy, e.g. ``"if stock ge 8 then gather;wait"``.
        max_chars: longest accepted text (``too_long``).
        max_rules: most rules (``too_many_rules``).
        max_depth: deepest nesting of ``not`` / parentheses (``too_deep``).
    """
    return _Parser(tokenize(text, max_chars=max_chars), max_rules=max_rules, max_depth=max_depth).policy()


# ------------------------------------------------------------------ canonical text
def _fmt_cond(c: Cond, parent: str = "or") -> str:
    if isinstance(c, Cmp):
        return f"{_word(c.left)} {c.op} {_word(c.right)}"
    if isinstance(c, Not):
        inner = _fmt_cond(c.arg, "not")
        return f"not {inner}"
    text = f" {c.op} ".join(_fmt_cond(a, c.op) for a in c.args)
    # "and" binds tighter than "or"; "not" tighter than both: parenthesise a looser child.
    looser = (c.op == "or" and parent in ("and", "not")) or (c.op == "and" and parent == "not")
    return f"({text})" if looser else text


def format_policy(policy: Policy) -> str:
    """The canonical text: single spaces, minimal parentheses, rules joined by ``;``.

    ``parse_policy(format_policy(p)) == p`` up to rule positions; two policies with the same
    canonical text are the same program.
    """
    return ";".join(r.action if r.cond is None else f"if {_fmt_cond(r.cond)} then {r.action}"
                    for r in policy.rules)


# ------------------------------------------------------------------ interpreter
@dataclass(frozen=True)
class View:
    """What one agent observes at the start of a tick."""

    stock: int
    me: int
    other: int
    tick: int
    last: str  # the other agent's previous action, or "none"


class _Budget:
    def __init__(self, max_steps: int, pos: int):
        self.left, self.max, self.pos = max_steps, max_steps, pos

    def spend(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise RuleError("step_limit", self.pos, f"more than {self.max} steps in one decision")


def _value(t: Union[Num, Var, Lit], view: View) -> int | str:
    if isinstance(t, Num):
        return t.value
    if isinstance(t, Lit):
        return t.name
    return getattr(view, t.name)


_CMP = {"lt": lambda a, b: a < b, "le": lambda a, b: a <= b, "gt": lambda a, b: a > b,
        "ge": lambda a, b: a >= b, "eq": lambda a, b: a == b, "ne": lambda a, b: a != b}


def _holds(c: Cond, view: View, budget: _Budget) -> bool:
    budget.spend()
    if isinstance(c, Cmp):
        return _CMP[c.op](_value(c.left, view), _value(c.right, view))
    if isinstance(c, Not):
        return not _holds(c.arg, view, budget)
    if c.op == "and":
        return all(_holds(a, view, budget) for a in c.args)  # all/any short-circuit
    return any(_holds(a, view, budget) for a in c.args)


def decide(policy: Policy, view: View, *, max_steps: int = MAX_STEPS) -> tuple[str, int]:
    """The action ``policy`` takes in ``view`` and the steps it took.

    A step is one rule tried plus one per condition node evaluated (comparison, ``not``,
    ``and``/``or``); short-circuited nodes are not evaluated. No rule fires: ``wait``.
    Raises ``RuleError("step_limit")`` past ``max_steps``.
    """
    budget = _Budget(max_steps, 0)
    for rule in policy.rules:
        budget.pos = rule.pos
        budget.spend()
        if rule.cond is None or _holds(rule.cond, view, budget):
            return rule.action, max_steps - budget.left
    return "wait", max_steps - budget.left
