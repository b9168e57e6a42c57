"""Compile the common shapes of search parameter FHIRPath into plain Python path walkers.

Search parameter expressions (https://hl7.org/fhir/R4/search.html#table,
https://hl7.org/fhir/R4/fhirpath.html) are almost all dotted paths with a few choice-type
casts and filters. ``parse`` turns an expression into branches of ``Op``s (one per top-level
``|``) and raises ``Unsupported`` for anything outside that subset; ``Compiler`` turns a
branch into a walker ``walk(element, root, out)`` that appends what ``leaf`` makes of each
selected element, knowing each element's FHIR datatype from ``ElementTypes`` (derived from
the R4 StructureDefinitions). Callers fall back to a FHIRPath engine on ``Unsupported``.
"""
from __future__ import annotations

import re
from typing import Callable, NamedTuple

from .index_values import Token

Walker = Callable[[object, dict, list], None]      # walk(element, root resource, out)


class Unsupported(Exception):
    """The expression is valid FHIRPath (perhaps) but outside the compiled subset."""


class UnknownElement(Unsupported):
    """A path step names no element of its context type."""


class Op(NamedTuple):
    kind: str          # field | as | resolve_is | where_eq | root
    name: str = ""     # element name, type name, or filtered field
    value: str = ""    # where_eq literal


# ---- parsing --------------------------------------------------------------------------

_TOKEN = re.compile(r"""\s*(?:
    (?P<str>'(?:[^'\\]|\\.)*')
  | (?P<num>\d+(?:\.\d+)?)
  | (?P<id>[A-Za-z_][A-Za-z0-9_]*|`[^`]+`)
  | (?P<ext>%[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>!=|!~|<=|>=|[.()\[\]|=<>,~+\-*/&{}])
)""", re.X)
_ESCAPES = {"'": "'", '"': '"', "`": "`", "\\": "\\", "/": "/", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def _tokens(expr: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(expr):
        if expr[pos:].strip() == "":
            break
        m = _TOKEN.match(expr, pos)
        if not m or m.end() == pos:
            raise SyntaxError(f"unexpected character at {pos}: {expr[pos:pos + 10]!r}")
        kind = m.lastgroup
        text = m.group(kind)
        if kind == "id" and text.startswith("`"):
            text = text[1:-1]
        elif kind == "str":
            text = re.sub(r"\\(.)", lambda e: _ESCAPES.get(e.group(1), e.group(1)), text[1:-1])
        out.append((kind, text))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, expr: str):
        self.toks = _tokens(expr)
        self.i = 0

    def peek(self, text: str | None = None, kind: str | None = None) -> bool:
        if self.i >= len(self.toks):
            return False
        k, t = self.toks[self.i]
        return (text is None or t == text) and (kind is None or k == kind)

    def accept(self, text: str, kind: str | None = None) -> bool:
        if self.peek(text, kind):
            self.i += 1
            return True
        return False

    def take(self, kind: str) -> str:
        if not self.peek(kind=kind):
            raise Unsupported(f"expected {kind}")
        self.i += 1
        return self.toks[self.i - 1][1]

    def expect(self, text: str) -> None:
        if not self.accept(text):
            raise Unsupported(f"expected {text!r}")

    def union(self) -> list[list[Op]]:
        m = _EXISTS_NOT_FALSE.match(" ".join(t for _, t in self.toks))
        if m:                  # Patient.deceased.exists() and Patient.deceased != false
            return [_Parser(m[1]).postfix() + [Op("is_true")]]
        branches = [self.branch()]
        while self.accept("|"):
            branches.append(self.branch())
        if self.i != len(self.toks):
            raise Unsupported(f"unexpected {self.toks[self.i][1]!r}")
        return branches

    def branch(self) -> list[Op]:
        ops = self.postfix()
        if self.accept("as", "id"):
            ops.append(Op("as", self.type_name()))
        return ops

    def postfix(self) -> list[Op]:
        ops = self.primary()
        while True:
            if self.accept("."):
                ops += self.invocation()
            elif self.accept("["):
                ops.append(Op("index", value=self.take("num")))
                self.expect("]")
            else:
                return ops

    def primary(self) -> list[Op]:
        if self.accept("("):
            inner = self.branch()
            self.expect(")")
            return inner
        if self.peek(kind="ext"):
            name = self.take("ext")
            if name in ("%resource", "%rootResource"):
                return [Op("root")]
            raise Unsupported(f"environment variable {name}")
        name = self.take("id")
        if self.peek("("):
            raise Unsupported(f"function {name}() at the start")
        return [Op("field", name)]

    def invocation(self) -> list[Op]:
        name = self.take("id")
        if not self.accept("("):
            return [Op("field", name)]
        if name in ("as", "ofType"):
            op = Op("as", self.type_name())
        elif name == "where":
            op = self.where()
        elif name == "extension" and self.peek(kind="str"):
            op = Op("where_eq", "url", self.take("str"))
            self.expect(")")
            return [Op("field", "extension"), op]
        else:
            raise Unsupported(f"function {name}()")
        self.expect(")")
        return [op]

    def where(self) -> Op:
        if self.accept("resolve", "id"):
            self.expect("(")
            self.expect(")")
            if not self.accept("is", "id"):
                raise Unsupported("resolve() without 'is'")
            return Op("resolve_is", self.type_name())
        field = self.take("id")
        self.expect("=")
        return Op("where_eq", field, self.take("str"))

    def type_name(self) -> str:
        name = self.take("id")
        if name in ("FHIR", "System") and self.accept("."):
            name = self.take("id")
        return name


_EXISTS_NOT_FALSE = re.compile(r"^([\w .]+?) \. exists \( \) and \1 != false$")


def parse(expression: str) -> list[list[Op]]:
    """Branches (top-level ``|``) of ``Op``s; ``Unsupported`` outside the compiled subset,
    ``SyntaxError`` when the text cannot be tokenised at all."""
    return _Parser(expression).union()


def split_union(expression: str) -> list[str]:
    """The top-level ``|`` branches of an expression as text (parentheses and strings respected)."""
    parts, depth, quote, start = [], 0, None, 0
    for i, ch in enumerate(expression):
        if quote:
            if ch == quote and expression[i - 1] != "\\":
                quote = None
        elif ch in "'`":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "|" and depth == 0:
            parts.append(expression[start:i].strip())
            start = i + 1
    parts.append(expression[start:].strip())
    return parts


# ---- element types --------------------------------------------------------------------

class ElementTypes:
    """FHIR element datatypes from the R4 StructureDefinitions (package data ``element-types.json.gz``).

    A context is a datatype or resource name (``HumanName``, ``Observation``) or, for a
    backbone element, its path (``Observation.component``).
    """

    def __init__(self, table: dict[str, dict[str, list[str] | str]]):
        self.table = table
        self.parents = {f"{s}.{p.rsplit('.', 1)[0]}" for s, els in table.items() for p in els if "." in p}

    def children(self, ctx: str, name: str) -> list[tuple[str, str]]:
        """``(json key, child context)`` for ``name`` on ``ctx``; choice elements expand per type."""
        struct, _, prefix = ctx.partition(".")
        elements = self.table.get(struct)
        if elements is None:
            raise Unsupported(f"cannot navigate into {ctx}")
        if name in ("extension", "modifierExtension"):
            return [(name, "Extension")]
        rel = f"{prefix}.{name}" if prefix else name
        types = elements.get(rel)
        if types is not None:
            if isinstance(types, str):            # contentReference "#Questionnaire.item"
                return [(name, types.lstrip("#"))]
            return [(name, self._context(struct, rel, t)) for t in types]
        choice = elements.get(rel + "[x]")
        if choice is not None:
            return [(name + t[0].upper() + t[1:], t) for t in choice]
        raise UnknownElement(f"{ctx} has no element '{name}'")

    def _context(self, struct: str, rel: str, type_code: str) -> str:
        path = f"{struct}.{rel}"
        if type_code in ("BackboneElement", "Element") and path in self.parents:
            return path
        return type_code

    def has_type(self, name: str) -> bool:
        return name in self.table


def same_type(actual: str, wanted: str) -> bool:
    """FHIRPath type test; case-insensitive because R4 writes ``DateTime`` for ``dateTime``."""
    return actual.lower() == wanted.lower()


# ---- compiling ------------------------------------------------------------------------

class Compiler:
    """Turns parsed branches into walkers. ``leaf(ctx)`` returns the walker that indexes one
    element of datatype/context ``ctx`` (or None when such an element yields nothing)."""

    def __init__(self, elements: ElementTypes, is_resource_type: Callable[[str], bool]):
        self.elements = elements
        self.is_resource_type = is_resource_type

    def branch(self, ops: list[Op], resource_type: str, leaf: Callable[[str], Walker | None],
               ctx: str | None = None) -> Walker | None | bool:
        """A walker over the resource (``ctx`` None) or over an element of ``ctx``.

        Returns False when the branch is for another resource type, None when it can never
        yield a value; raises ``Unsupported``/``UnknownElement`` outside the subset.
        """
        if ops and ops[0].kind == "root":
            walk = self._build(resource_type, ops[1:], leaf)
            return walk and _rooted(walk)
        if ctx is None:
            ctx = resource_type
            if ops and ops[0].kind == "field" and ops[0].name[:1].isupper():
                first = ops[0].name
                if first in (resource_type, "Resource", "DomainResource"):
                    ops = ops[1:]
                elif self.is_resource_type(first) or self.elements.has_type(first):
                    return False
        return self._build(ctx, ops, leaf)

    def _build(self, ctx: str, ops: list[Op], leaf) -> Walker | None:
        if not ops:
            return leaf(ctx)
        op, rest = ops[0], ops[1:]
        if ops[-1].kind == "is_true":
            return _is_true(self._build(ctx, ops[:-1], lambda datatype: _present))
        if op.kind == "field" and rest and rest[0].kind == "index":
            if "." in ctx or ctx[:1].islower() or not self.is_resource_type(ctx):
                raise Unsupported("an index below the resource root")
            alts = self.elements.children(ctx, op.name)
            subs = [(k, w) for k, t in alts if (w := self._build(t, rest[1:], leaf)) is not None]
            return _indexed(subs, int(rest[0].value)) if subs else None
        if op.kind == "field":
            alts = [(k, t, None) for k, t in self.elements.children(ctx, op.name)]
            while rest and rest[0].kind == "as":
                wanted = rest[0].name
                alts = [(k, wanted, wanted) if t == "Resource" and self.is_resource_type(wanted) else (k, t, only)
                        for k, t, only in alts if same_type(t, wanted) or t == "Resource"]
                rest = rest[1:]
            if len(alts) > 1 and rest and rest[0].kind in ("field", "where_eq"):
                alts = self._narrow(alts, rest[0].name, f"{ctx}.{op.name}")
            subs = []
            for k, t, only in alts:     # only: a contained/entry resource must be of this type
                w = self._build(t, rest, leaf)
                if w is not None:
                    subs.append((k, _where_eq("resourceType", only, w) if only else w))
            return _field(subs) if subs else None
        if op.kind == "as":
            return self._build(ctx, rest, leaf) if same_type(ctx, op.name) else None
        if op.kind == "resolve_is":
            if ctx != "Reference":
                raise Unsupported(f"resolve() on {ctx}")
            nxt = self._build(ctx, rest, leaf)
            return nxt and _reference_is(op.name, nxt)
        if op.kind == "where_eq":
            self.elements.children(ctx, op.name)      # the filtered field must exist
            nxt = self._build(ctx, rest, leaf)
            return nxt and _where_eq(op.name, op.value, nxt)
        raise Unsupported(f"{op.kind} here")

    def _narrow(self, alts: list[tuple[str, str, str | None]], name: str, where: str):
        """A choice element's types that have a child ``name`` (``Extension.value.city`` is
        ``valueAddress.city``); ``UnknownElement`` when none has."""
        kept = [alt for alt in alts if self._has_child(alt[1], name)]
        if not kept:
            raise UnknownElement(f"no type of {where} has an element '{name}'")
        return kept

    def _has_child(self, ctx: str, name: str) -> bool:
        try:
            self.elements.children(ctx, name)
        except Unsupported:
            return False
        return True


def _field(subs: list[tuple[str, Walker]]) -> Walker:
    if len(subs) == 1:
        key, nxt = subs[0]

        def walk(elem, root, out):
            if type(elem) is dict:
                v = elem.get(key)
                if v is not None:
                    if type(v) is list:
                        for x in v:
                            nxt(x, root, out)
                    else:
                        nxt(v, root, out)
    else:
        def walk(elem, root, out):
            if type(elem) is dict:
                for key, nxt in subs:
                    v = elem.get(key)
                    if v is not None:
                        if type(v) is list:
                            for x in v:
                                nxt(x, root, out)
                        else:
                            nxt(v, root, out)
    walk.subs = subs          # lets the extractor dispatch on a resource's top-level keys
    return walk


def _indexed(subs: list[tuple[str, Walker]], n: int) -> Walker:
    def walk(elem, root, out):
        for key, nxt in subs:
            v = elem.get(key)
            if type(v) is list:
                if len(v) > n:
                    nxt(v[n], root, out)
            elif v is not None and n == 0:
                nxt(v, root, out)
    return walk


def _present(v, root, out):
    if v is not False:
        out.append(True)


def _is_true(walk: Walker | None) -> Walker:
    """``X.exists() and X != false`` as the boolean it always yields (token true/false)."""
    def is_true(elem, root, out):
        found: list = []
        if walk is not None:
            walk(elem, root, found)
        out.append(Token(None, "true" if found else "false"))
    return is_true


def _rooted(walk: Walker) -> Walker:
    return lambda elem, root, out: walk(root, root, out)


def _where_eq(field: str, value: str, nxt: Walker) -> Walker:
    def walk(elem, root, out):
        if type(elem) is dict and elem.get(field) == value:
            nxt(elem, root, out)
    return walk


def reference_type(ref: dict) -> str | None:
    """The resource type a Reference points to: from ``reference`` (``Type/id``, absolute
    ``.../Type/id[/_history/v]``), else its ``type`` element."""
    text = ref.get("reference")
    if isinstance(text, str) and not text.startswith(("#", "urn:")):
        parts = text.split("/")
        if len(parts) >= 4 and parts[-2] == "_history":
            parts = parts[:-2]
        if len(parts) >= 2 and parts[-2][:1].isupper():
            return parts[-2]
    t = ref.get("type")
    return t if isinstance(t, str) else None


def _reference_is(type_name: str, nxt: Walker) -> Walker:
    def walk(elem, root, out):
        if type(elem) is dict and reference_type(elem) == type_name:
            nxt(elem, root, out)
    return walk


_RESOLVE_IS = re.compile(r"where\(\s*resolve\(\)\s+is\s+(?:FHIR\.)?([A-Za-z]+)\s*\)")


def rewrite_resolve(expression: str) -> str:
    """``where(resolve() is X)`` as a reference-text test, for engines without ``resolve()``."""
    return _RESOLVE_IS.sub(
        lambda m: f"where(reference.startsWith('{m[1]}/') or reference.contains('/{m[1]}/'))", expression)
