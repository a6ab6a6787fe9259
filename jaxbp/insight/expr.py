"""The expression language of ``jaxbp trace``: a safe parser (no ``eval``) that builds a jaxbp function.

Grammar (the usual precedence; ``**`` binds tighter than unary minus and is right-associative)::

  expr   := term (("+" | "-") term)*
  term   := unary (("*" | "/") unary)*
  unary  := ("-" | "+") unary | power
  power  := atom (("**" | "^") unary)?
  atom   := NUMBER | NAME | NAME "(" expr ("," expr)* ")" | "(" expr ")"

``×``, ``÷`` and ``−`` are accepted for ``*``, ``/`` and ``-``. ``+``, ``-``, ``*``, ``/``, unary
minus and ``**`` are the rules ``add``, ``subtract``, ``multiply``, ``divide``, ``negative`` and ``power``
of ``jaxbp.ops``, so a trace shows no JAX primitive for them. Functions are the element-wise
activations of ``jaxbp.ops`` (``sigmoid``, ``tanh``, ``relu``, ``leaky_relu``, ``elu``; not softmax,
which needs a vector and the inputs are numbers) plus ``max`` (the max gate), ``exp``, ``log``,
``sqrt``, ``softplus``, ``gelu`` and ``silu``. A syntax error, an unknown
name or a missing input raises ``ExprError``: one line, with the 1-based position in the source.

Limits: at most ``MAX_DEPTH`` (100) levels of nesting (parentheses, calls, unary signs and powers
each count one) and ``MAX_NODES`` (200) numbers, names and operations: a trace shows one row per
operation, and a longer one would not be read. A number or a power of numbers must be a finite
float64 (``10**400`` and ``0**-1`` are errors, at their position).

Example::

  expr = parse("sigmoid(w0*x0 + w1*x1 + w2)")
  expr.names                              # ('w0', 'x0', 'w1', 'x1', 'w2')
  f = expr.function(jaxbp.ops)            # f(**inputs), on the manual rules
  g = expr.function(jaxbp.ops.reference)  # the same, on plain jnp
"""

import difflib
import re
from typing import Any, NamedTuple


class Function(NamedTuple):
  """A function of the language: what it calls and what its arguments may be."""
  target: str   # its name in jaxbp.ops (or jnp)
  min_args: int
  max_args: int
  numeric_params: bool  # True: arguments after the first are number parameters (leaky_relu's slope),
                        # written as they are; False: every argument is an expression


FUNCTIONS = {
    "sigmoid": Function("sigmoid", 1, 1, False), "tanh": Function("tanh", 1, 1, False),
    "relu": Function("relu", 1, 1, False), "leaky_relu": Function("leaky_relu", 1, 2, True),
    "elu": Function("elu", 1, 2, True), "max": Function("maximum", 2, 2, False),
    "maximum": Function("maximum", 2, 2, False), "exp": Function("exp", 1, 1, False),
    "log": Function("log", 1, 1, False), "sqrt": Function("sqrt", 1, 1, False),
    "softplus": Function("softplus", 1, 1, False), "gelu": Function("gelu", 1, 1, False),
    "silu": Function("silu", 1, 1, False),
}
_OPERATORS = {"+": "add", "-": "subtract", "*": "multiply", "/": "divide"}
_TOKEN = re.compile(r"\s*(?:(?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
                    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<op>\*\*|[-+*/^(),×÷−]))")
_UNICODE = {"×": "*", "÷": "/", "−": "-"}
MAX_DEPTH = 100
MAX_NODES = 200


class ExprError(ValueError):
  """A syntax error, unknown name or missing input, with its 1-based position in the source."""

  def __init__(self, message: str, position: int | None = None) -> None:
    self.position = position
    where = f"at position {position + 1}: " if position is not None else ""
    super().__init__(where + message)


class Token(NamedTuple):
  kind: str  # "num", "name", "op" or "end"
  text: str
  pos: int   # 0-based


class Node(NamedTuple):
  """A parsed expression: kind is "num", "var", "neg", "bin", "pow" or "call"."""
  kind: str
  value: Any   # the number, the name, the operator or the function
  args: tuple  # sub-expressions
  pos: int


def tokenize(source: str) -> list[Token]:
  """The tokens of ``source``, ending with an "end" token; ExprError on a character not allowed."""
  tokens, pos = [], 0
  while pos < len(source):
    if source[pos:].strip() == "":
      break
    m = _TOKEN.match(source, pos)
    if m is None:  # every token is at least one character, so a match always moves on
      bad = source[pos:].lstrip()[0]
      raise ExprError(f"unexpected character {bad!r}", len(source) - len(source[pos:].lstrip()))
    kind = m.lastgroup
    assert kind is not None  # every alternative of _TOKEN is a named group
    text = _UNICODE.get(m.group(kind), m.group(kind))
    tokens.append(Token(kind, text, m.start(kind)))
    pos = m.end()
  return tokens + [Token("end", "", len(source))]


class _Parser:
  """Recursive descent over the tokens, one method per grammar rule."""

  def __init__(self, source):
    self.tokens, self.i, self.depth, self.nodes = tokenize(source), 0, 0, 0

  def node(self, kind, value, args, pos):
    self.nodes += 1
    if self.nodes > MAX_NODES:
      raise ExprError(f"more than {MAX_NODES} numbers, names and operations (the limit of jaxbp trace)", pos)
    return Node(kind, value, args, pos)

  def nested(self, rule, pos):
    """``rule()`` one level deeper; ExprError past MAX_DEPTH, before Python's own recursion limit."""
    self.depth += 1
    if self.depth > MAX_DEPTH:
      raise ExprError(f"nested deeper than {MAX_DEPTH} levels (the limit of jaxbp trace)", pos)
    try:
      return rule()
    finally:
      self.depth -= 1

  def peek(self):
    return self.tokens[self.i]

  def take(self):
    self.i += 1
    return self.tokens[self.i - 1]

  def expect(self, text, what):
    tok = self.take()
    if tok.text != text:
      raise ExprError(f"expected {what}, found {_describe(tok)}", tok.pos)
    return tok

  def parse(self):
    node = self.expr()
    tok = self.peek()
    if tok.kind != "end":
      raise ExprError(f"unexpected {_describe(tok)} after a complete expression", tok.pos)
    return node

  def expr(self):
    node = self.term()
    while self.peek().text in ("+", "-"):
      tok = self.take()
      node = self.node("bin", tok.text, (node, self.term()), tok.pos)
    return node

  def term(self):
    node = self.unary()
    while self.peek().text in ("*", "/"):
      tok = self.take()
      node = self.node("bin", tok.text, (node, self.unary()), tok.pos)
    return node

  def unary(self):
    if self.peek().text in ("-", "+"):
      tok = self.take()
      operand = self.nested(self.unary, tok.pos)
      if tok.text == "+":
        return operand
      if operand.kind == "num":  # -2 is a number, not a node
        return Node("num", -operand.value, (), tok.pos)
      return self.node("neg", "-", (operand,), tok.pos)
    return self.power()

  def power(self):
    node = self.atom()
    if self.peek().text in ("**", "^"):
      tok = self.take()
      exponent = self.nested(self.unary, tok.pos)
      if node.kind == "num" and exponent.kind == "num":  # a number, computed here: its errors have a place
        return Node("num", _power(node.value, exponent.value, tok.pos), (), tok.pos)
      node = self.node("pow", "**", (node, exponent), tok.pos)
    return node

  def atom(self):
    tok = self.take()
    if tok.kind == "num":
      number = float(tok.text)
      if number == float("inf"):
        raise ExprError(f"number {tok.text} is too large for a float64", tok.pos)
      return self.node("num", number, (), tok.pos)
    if tok.text == "(":
      node = self.nested(self.expr, tok.pos)
      self.expect(")", f"')' to close the '(' at position {tok.pos + 1}")
      return node
    if tok.kind == "name":
      return self.call(tok) if self.peek().text == "(" else Node("var", tok.text, (), tok.pos)
    raise ExprError(f"expected a number, a name or '(', found {_describe(tok)}", tok.pos)

  def call(self, tok):
    if tok.text not in FUNCTIONS:
      hint = _suggest(tok.text, FUNCTIONS)
      raise ExprError(f"unknown function {tok.text!r}{hint}; known: {', '.join(FUNCTIONS)}", tok.pos)
    self.take()  # "("
    args = [self.nested(self.expr, tok.pos)]
    while self.peek().text == ",":
      self.take()
      args.append(self.nested(self.expr, tok.pos))
    self.expect(")", f"',' or ')' in the call of {tok.text}")
    spec = FUNCTIONS[tok.text]
    if not spec.min_args <= len(args) <= spec.max_args:
      lo, hi = spec.min_args, spec.max_args
      want = str(lo) if lo == hi else f"{lo} to {hi}"
      raise ExprError(f"{tok.text} takes {want} argument(s), got {len(args)}", tok.pos)
    for extra in args[1:] if spec.numeric_params else ():
      if extra.kind != "num":
        raise ExprError(f"{tok.text}'s parameter must be a number", extra.pos)
    return self.node("call", tok.text, tuple(args), tok.pos)


def _power(base, exponent, pos):
  """base ** exponent for two numbers of the expression, as a finite float; ExprError otherwise."""
  try:
    value = base ** exponent
  except OverflowError:
    raise ExprError(f"{base:g} ** {exponent:g} is too large for a float64", pos) from None
  except ZeroDivisionError:
    raise ExprError(f"{base:g} ** {exponent:g} divides by zero", pos) from None
  if isinstance(value, complex):
    raise ExprError(f"{base:g} ** {exponent:g} is not a real number", pos)
  return float(value)


def _describe(tok):
  return "the end of the expression" if tok.kind == "end" else repr(tok.text)


def _suggest(name, known):
  close = difflib.get_close_matches(name, list(known), n=1)
  return f" (did you mean {close[0]!r}?)" if close else ""


class Expression:
  """A parsed expression: its source, its input names, and functions built from it."""

  def __init__(self, source, tree):
    self.source, self.tree = source, tree
    uses: dict = {}
    _collect(tree, uses)
    self.uses = uses  # name -> position of its first use
    self.names = tuple(uses)

  def check_inputs(self, inputs):
    """Raises ExprError for an input the expression needs but is not given, or one it never uses."""
    for name, pos in self.uses.items():
      if name in FUNCTIONS:
        raise ExprError(f"{name!r} is a function; call it as {name}(...)", pos)
      if name not in inputs:
        hint = _suggest(name, inputs)
        raise ExprError(f"missing input {name!r}{hint}: give its value as {name}=NUMBER", pos)
    for name in inputs:
      if name not in self.uses:
        raise ExprError(f"input {name!r} does not appear in {self.source!r}")

  def function(self, ops):
    """``f(**inputs)`` evaluating the expression with ``ops`` (``jaxbp.ops`` or its ``reference``)."""
    import jax.numpy as jnp

    def resolve(name):
      fn = getattr(ops, name, None)
      return fn if fn is not None else getattr(jnp, name)

    def f(**inputs):
      self.check_inputs(inputs)
      return _evaluate(self.tree, inputs, resolve)

    f.__name__ = "expression"
    return f


def _collect(node, uses):
  if node.kind == "var":
    uses.setdefault(node.value, node.pos)
  for arg in node.args:
    _collect(arg, uses)


def _evaluate(node, inputs, resolve):
  if node.kind == "num":
    return node.value
  if node.kind == "var":
    return inputs[node.value]
  if node.kind == "call":
    spec = FUNCTIONS[node.value]
    first, rest = _evaluate(node.args[0], inputs, resolve), node.args[1:]
    if spec.numeric_params:
      return resolve(spec.target)(first, *(a.value for a in rest))
    return resolve(spec.target)(first, *(_evaluate(a, inputs, resolve) for a in rest))
  args = [_evaluate(a, inputs, resolve) for a in node.args]
  if node.kind == "neg":
    return resolve("negative")(args[0])
  if node.kind == "pow":
    base, exponent = args
    if node.args[1].kind == "num" and float(exponent).is_integer():
      exponent = int(exponent)  # an integer power: x**2 stays defined for negative x
    return resolve("power")(base, exponent)
  return resolve(_OPERATORS[node.value])(*args)


def parse(source: str) -> Expression:
  """Parses ``source`` into an ``Expression``; raises ExprError (with the position) if it is not one."""
  if not source.strip():
    raise ExprError("empty expression", 0)
  return Expression(source, _Parser(source).parse())
