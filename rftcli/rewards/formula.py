"""A fast equality check for simple formulas, tried before math_verify.

Most LaTeX answers are small formulas - `\\frac{\\sqrt{3}}{2}`, `2\\pi/3`, `(x+1)^2`, `(2, 5]`,
`\\sin(\\frac{\\pi}{7})` - which math_verify parses with an ANTLR grammar and compares with sympy's
`simplify`, at 5-200 ms each. `formulas_equal` parses the same small language itself and compares
numerically, following math_verify's conventions:
    without letters  the values to 12 significant digits, or - when a side has a decimal point, as
                     math_verify does - both rounded to 6 decimals; whole numbers exactly:
                     `\\sqrt{8}` = `2\\sqrt{2}`, `\\pi` = `3.1415927` != `3.14159`, `\\sqrt[10^9]{2}` != `1`
    with letters     both sides at three fixed points (negative ones included, so `\\sqrt{x^2}` is
                     not `x`), to 1e-9 relative: two different formulas that agree at all three are
                     vanishingly unlikely. Letters are variables by name (`2x` != `2y`); `e` is Euler's number
    intervals, tuples  `(a, b]`: the same brackets and equal elements in order; `\\infty` allowed
    sets             `\\{a, b\\}`: the same values in any order, repeats ignored (numbers only)
    equations        as math_verify where its rules are simple: `y = 2x+1` against `2x+1` (a predicted
                     equation by its right side; a ground truth only when its left side is a variable),
                     two `y = ...` by their right sides, and the same equation rearranged or scaled
                     (`2y = 4x + 2` = `y - 2x = 1`); other pairs of equations go to math_verify, which solves
It answers None - "ask math_verify" - for anything outside the language (inequalities, `\\log` (base 10
for math_verify), `i`, derivatives `\\frac{d}{dx}`, `\\sin^2 x`, `\\sin x` without brackets, lists
without brackets, percent, thousands separators), for a value that is not a finite real at some point
(division by zero, a root of a negative number), and for input longer than `MAX_CHARS`. Every value
is a float, so nothing here can run long: `10^{10^{10}}` overflows and answers None at once.

The language: numbers, single letters, `\\pi`; `+ - * /`, `\\cdot`, `\\times`, `\\div`, `^` with a
braced or one-character exponent; `\\frac`, `\\dfrac`, `\\tfrac` (braced or one-character arguments);
`\\sqrt{}` and `\\sqrt[n]{}`; `\\sin \\cos \\tan \\cot \\sec \\csc \\arcsin \\arccos \\arctan \\ln
\\exp` of a bracketed argument; `( )`, `{ }`, `\\left( \\right)`; implicit products (`2x`, `3\\sqrt{2}`,
`x(x+1)`) except between two numbers ("3 4" is not 12). Spacing commands and `$` are ignored.
`tests/test_rewards.py` checks every verdict it gives against math_verify's.

Examples:
    >>> formulas_equal("\\\\frac{\\\\sqrt{2}}{2}", "\\\\frac{1}{\\\\sqrt{2}}"), formulas_equal("(x+1)^2", "x^2+2x+1")
    (True, True)
    >>> formulas_equal("2\\\\pi", "\\\\pi"), formulas_equal("\\\\sqrt{x^2}", "x")
    (False, False)
    >>> formulas_equal("(2, \\\\infty)", "(2,\\\\infty]"), formulas_equal("\\\\{3, 1\\\\}", "\\\\{1, 3, 3\\\\}")
    (False, True)
    >>> formulas_equal("\\\\sin x", "1") is None
    True
"""

from __future__ import annotations

import math
import re
import zlib

MAX_CHARS = 200
_TOKEN = re.compile(r"\s*(\d+(?:\.\d+)?|\.\d+|\\[A-Za-z]+|\\[,;:! {}]|[A-Za-z]|[-+*/^(){}\[\],=])")
_SKIP = {"\\,", "\\;", "\\:", "\\!", "\\ ", "\\left", "\\right", "\\displaystyle"}
_TIMES = {"*", "\\cdot", "\\times"}
_DIVIDE = {"/", "\\div"}
_FRAC = {"\\frac", "\\dfrac", "\\tfrac"}
_FUNCTIONS = {
    "\\sin": math.sin, "\\cos": math.cos, "\\tan": math.tan, "\\cot": lambda v: 1.0 / math.tan(v),
    "\\sec": lambda v: 1.0 / math.cos(v), "\\csc": lambda v: 1.0 / math.sin(v), "\\arcsin": math.asin,
    "\\arccos": math.acos, "\\arctan": math.atan, "\\ln": math.log, "\\exp": math.exp,
}
_OPEN = {"(": ")", "[": "]", "\\{": "\\}", "{": "}"}
_DECIMAL = re.compile(r"\d\.\d|(?<![\d.])\.\d")
_DERIVATIVE = re.compile(r"\\[dt]?frac\s*\{\s*d")
_POINTS = ((0.5377, 1.8339, -2.2588), (-1.3077, 0.3426, 3.5784), (2.7694, -1.3499, 3.0349))


class _Undecided(Exception):
    pass


def _tokens(text: str) -> list[str]:
    out, pos = [], 0
    text = text.strip().replace("$", "")
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            if text[pos:].strip():
                raise _Undecided
            break
        pos = m.end()
        token = m.group(1)
        if token not in _SKIP:
            out.append(token)
    return out


class _Parser:
    """Recursive descent over tokens into a tree of tuples: ("num", v), ("var", name), ("const", v),
    ("inf",), ("neg", a), (op, a, b) for add/sub/mul/div/pow, ("root", degree, a), ("fn", name, a)."""

    def __init__(self, tokens: list[str]):
        self.tokens = tokens
        self.pos = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if token is None or (expected is not None and token != expected):
            raise _Undecided
        self.pos += 1
        return token

    def parse(self, element: bool = False):
        if element and self.tokens[-1:] == ["\\infty"] and self.tokens[:-1] in ([], ["+"], ["-"]):
            return ("neg", ("inf",)) if self.tokens[0] == "-" else ("inf",)
        tree = self.expr()
        if self.peek() is not None:
            raise _Undecided
        return tree

    def expr(self):
        tree = self.term()
        while self.peek() in ("+", "-"):
            op = "add" if self.take() == "+" else "sub"
            tree = (op, tree, self.term())
        return tree

    def term(self):
        tree = self.unary()
        while True:
            token = self.peek()
            if token in _TIMES or token in _DIVIDE:
                self.take()
                tree = ("mul" if token in _TIMES else "div", tree, self.unary())
            elif token is not None and self._starts_atom(token):
                if tree[0] == "num" and token[0].isdigit():  # "3 4" is two numbers, not 12
                    raise _Undecided
                tree = ("mul", tree, self.power())
            else:
                return tree

    def _starts_atom(self, token: str) -> bool:
        return (token[0].isdigit() or token[0] == "." or token.isalpha() or token in ("(", "{", "\\pi", "\\sqrt")
                or token in _FRAC or token in _FUNCTIONS)

    def unary(self):
        if self.peek() in ("+", "-"):
            sign = self.take()
            inner = self.unary()
            return ("neg", inner) if sign == "-" else inner
        return self.power()

    def power(self):
        base = self.atom()
        if self.peek() == "^":
            self.take()
            return ("pow", base, self.argument())
        return base

    def argument(self):
        """A braced group, or a single digit or letter (`\\frac12`, `x^2`)."""
        token = self.peek()
        if token == "{":
            return self.atom()
        if token is not None and token[0].isdigit():
            self.take()
            if len(token) > 1:  # "\frac12": the tokenizer read "12"; split off its first digit
                self.tokens.insert(self.pos, token[1:])
            return ("num", float(token[0]))
        if token is not None and len(token) == 1 and token.isalpha():
            return self.atom()
        raise _Undecided

    def atom(self):
        token = self.take()
        if token[0].isdigit() or token[0] == ".":
            return ("num", float(token))
        if len(token) == 1 and token.isalpha():
            if token in "iIE":  # the imaginary unit, or names math_verify may read as constants
                raise _Undecided
            return ("const", math.e) if token == "e" else ("var", token)
        if token == "\\pi":
            return ("const", math.pi)
        if token in ("(", "{"):
            inner = self.expr()
            self.take(_OPEN[token])
            return inner
        if token in _FRAC:
            return ("div", self.argument(), self.argument())
        if token == "\\sqrt":
            degree = ("num", 2.0)
            if self.peek() == "[":
                self.take()
                degree = self.expr()
                self.take("]")
            return ("root", degree, self.argument())
        if token in _FUNCTIONS and self.peek() in ("(", "{"):  # not "\sin x" nor "\sin^2 x"
            return ("fn", token, self.atom())
        raise _Undecided


def _split_elements(tokens: list[str]) -> list[list[str]] | None:
    """The comma-separated elements inside a bracketed list, or None when `tokens` is not one."""
    if len(tokens) < 2 or tokens[0] not in ("(", "[", "\\{") or tokens[-1] not in (")", "]", "\\}"):
        return None
    if (tokens[0] == "\\{") != (tokens[-1] == "\\}"):
        return None
    elements, current, depth = [], [], 0
    for token in tokens[1:-1]:
        if token in _OPEN:
            depth += 1
        elif token in _OPEN.values():
            depth -= 1
            if depth < 0:  # "(1) + (2)": the outer brackets are not one list
                return None
        if token == "," and depth == 0:
            elements.append(current)
            current = []
        else:
            current.append(token)
    elements.append(current)
    if depth != 0 or any(not e for e in elements) or (len(elements) < 2 and tokens[0] != "\\{"):
        return None
    return elements


def parse_formula(text: str):
    """("expr", tree), ("eq", lhs, rhs), ("seq", brackets, trees) or ("set", trees) for `text`; None
    outside the language."""
    if not text or len(text) > MAX_CHARS or _DERIVATIVE.search(text):
        return None
    try:
        tokens = _tokens(text)
        elements = _split_elements(tokens)
        if elements is not None:
            trees = [_Parser(e).parse(element=True) for e in elements]
            if tokens[0] == "\\{":
                return ("set", trees)
            return ("seq", tokens[0] + tokens[-1], trees)
        if "," in tokens or tokens.count("=") > 1:
            return None
        if "=" in tokens:
            at = tokens.index("=")
            return ("eq", _Parser(tokens[:at]).parse(), _Parser(tokens[at + 1:]).parse())
        return ("expr", _Parser(tokens).parse())
    except (_Undecided, RecursionError, ValueError):
        return None


def _evaluate(tree, env: dict[str, float]) -> float:
    kind = tree[0]
    if kind == "num" or kind == "const":
        return tree[1]
    if kind == "var":
        return env[tree[1]]
    if kind == "inf":
        raise ValueError("infinity in an expression")
    if kind == "neg":
        return -_evaluate(tree[1], env)
    if kind == "fn":
        return _FUNCTIONS[tree[1]](_evaluate(tree[2], env))
    a, b = _evaluate(tree[1], env), _evaluate(tree[2], env)
    if kind == "add":
        return a + b
    if kind == "sub":
        return a - b
    if kind == "mul":
        return a * b
    if kind == "div":
        return a / b
    if kind == "pow":
        return math.pow(a, b)
    # root: a is the degree, b the radicand
    if b < 0 or a == 0:
        raise ValueError("not a real root")
    return math.pow(b, 1.0 / a)


def _variables(tree, found: set[str]) -> set[str]:
    if tree[0] == "var":
        found.add(tree[1])
    for child in tree[1:]:
        if isinstance(child, tuple):
            _variables(child, found)
    return found


def _value(name: str, point: int) -> float:
    # Fixed per name and point (crc32, not hash(): the same in every process).
    h = zlib.crc32(name.encode())
    return _POINTS[point][h % 3] * (1.0 + (h % 97) / 997)


def _numbers_equal(x: float, y: float, decimal: bool) -> bool | None:
    if not (math.isfinite(x) and math.isfinite(y)):
        return None
    if x.is_integer() and y.is_integer():
        return x == y
    return math.isclose(x, y, rel_tol=1e-12, abs_tol=1e-15) or (decimal and round(x, 6) == round(y, 6))


def _trees_equal(a, b, decimal: bool) -> bool | None:
    if (a[0] == "inf" or b[0] == "inf" or a == ("neg", ("inf",)) or b == ("neg", ("inf",))):
        return a == b
    names = _variables(a, set()) | _variables(b, set())
    if not names:
        return _numbers_equal(_evaluate(a, {}), _evaluate(b, {}), decimal)
    for point in range(len(_POINTS)):
        env = {name: _value(name, point) for name in names}
        x, y = _evaluate(a, env), _evaluate(b, env)
        if not (math.isfinite(x) and math.isfinite(y)):
            return None
        if not math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12):
            return False
    return True


def _all(verdicts) -> bool | None:
    out = True
    for verdict in verdicts:
        if verdict is None:
            return None
        out = out and verdict
    return out


def _equations_equal(pred, gold, decimal: bool) -> bool | None:
    """math_verify's rules where they are simple: a predicted equation's right side against a plain
    answer; a plain prediction against an assignment's (`y = ...`) right side; two assignments to the
    same variable by their right sides. Otherwise only proportional `lhs - rhs` (the same equation
    rearranged or scaled) is decided, as True; math_verify solves the rest."""
    if pred[0] == "eq" and gold[0] == "expr":
        return _trees_equal(pred[2], gold[1], decimal)
    if gold[0] == "eq" and pred[0] == "expr":
        return _trees_equal(pred[1], gold[2], decimal) if gold[1][0] == "var" else None
    if pred[0] != "eq" or gold[0] != "eq":
        return None
    name = pred[1][1] if pred[1][0] == "var" else None
    if (name is not None and gold[1] == pred[1] and name not in _variables(pred[2], set())
            and name not in _variables(gold[2], set())):
        return _trees_equal(pred[2], gold[2], decimal)
    a, b = ("sub", pred[1], pred[2]), ("sub", gold[1], gold[2])
    names = _variables(a, set()) | _variables(b, set())
    if not names:
        return None
    ratios = []
    for point in range(len(_POINTS)):
        env = {n: _value(n, point) for n in names}
        x, y = _evaluate(a, env), _evaluate(b, env)
        if not (math.isfinite(x) and math.isfinite(y)) or abs(y) < 1e-12 or abs(x) < 1e-12:
            return None
        ratios.append(x / y)
    return True if all(math.isclose(r, ratios[0], rel_tol=1e-9) for r in ratios) else None


def formulas_equal(pred: str, gold: str) -> bool | None:
    """Whether two simple formulas are equal (see the module docstring); None when undecided."""
    a, b = parse_formula(pred), parse_formula(gold)
    if a is None or b is None:
        return None
    decimal = _DECIMAL.search(pred) is not None or _DECIMAL.search(gold) is not None
    try:
        if a[0] == "eq" or b[0] == "eq":
            return _equations_equal(a, b, decimal)
        if a[0] != b[0]:
            return None
        if a[0] == "expr":
            return _trees_equal(a[1], b[1], decimal)
        if a[0] == "seq":
            if len(a[2]) != len(b[2]):
                return False
            verdict = _all(_trees_equal(x, y, decimal) for x, y in zip(a[2], b[2], strict=True))
            return verdict if a[1] == b[1] or verdict is None else False
        # sets of numbers: every value of one has an equal value in the other
        if any(_variables(t, set()) for t in a[1] + b[1]):
            return None
        xs, ys = [_evaluate(t, {}) for t in a[1]], [_evaluate(t, {}) for t in b[1]]
        matches = [[_numbers_equal(x, y, decimal) for y in ys] for x in xs]
        if any(v is None for row in matches for v in row):
            return None
        return all(any(row) for row in matches) and all(any(col) for col in zip(*matches, strict=True))
    except (ValueError, ZeroDivisionError, OverflowError, KeyError):
        return None
