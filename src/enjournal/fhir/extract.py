"""Compiled extraction of search index values from a resource.

For each resource type, every search parameter's expression is split on top-level ``|``,
the branches for other types are dropped, and each remaining branch is compiled once into
a plain Python path walker (``fhirpath_compile``) that knows the FHIR datatype of what it
selects, so turning elements into index values (``index_convert``) is a table lookup.
Branches outside the compiled subset fall back to fhirpathpy, compiled once and cached.
``TypeExtractor`` dispatches on the resource's top-level keys, so parameters whose first
element is absent cost nothing. See https://hl7.org/fhir/R4/search.html.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Iterable

from . import index_convert
from .fhirpath_compile import Compiler, Unsupported, UnknownElement, Walker, parse, rewrite_resolve, split_union
from .index_values import Composite

NOT_INDEXED = ("special",)     # near, _text, _content: handled by the store, not by extraction


@dataclass
class CompileJob:
    """What one parameter compilation needs, and what it learnt (the fallback branches)."""
    resource_type: str
    compiler: Compiler
    by_url: Callable[[str], object]
    strict: bool = False
    fallbacks: list[str] = field(default_factory=list)


class TypeExtractor:
    """Extraction for one resource type: ``extractor(resource)`` -> ``[(code, value), ...]``,
    duplicates within a parameter removed."""

    __slots__ = ("by_key", "always", "fallbacks")

    def __init__(self, by_key: dict[str, list[tuple[str, Walker]]], always: list[tuple[str, Walker]],
                 fallbacks: dict[str, list[str]]):
        self.by_key = by_key
        self.always = always
        self.fallbacks = fallbacks       # code -> branches evaluated by fhirpathpy

    def __call__(self, resource: dict) -> list[tuple[str, object]]:
        found: dict[str, list] = {}
        by_key = self.by_key
        for key, value in resource.items():
            entries = by_key.get(key)
            if entries is None:
                continue
            for code, walk in entries:
                out = found.get(code)
                if out is None:
                    out = found[code] = []
                if type(value) is list:
                    for x in value:
                        walk(x, resource, out)
                else:
                    walk(value, resource, out)
        for code, walk in self.always:
            out = found.get(code)
            if out is None:
                out = found[code] = []
            walk(resource, resource, out)
        pairs: list[tuple[str, object]] = []
        for code, values in found.items():
            if len(values) == 1:
                pairs.append((code, values[0]))
            elif values:
                pairs.extend((code, v) for v in dict.fromkeys(values))
        return pairs


def build_extractor(resource_type: str, params: Iterable, compiler: Compiler,
                    by_url: Callable[[str], object]) -> TypeExtractor:
    """Compile every parameter in ``params`` (SearchParams applying to ``resource_type``)."""
    by_key: dict[str, list[tuple[str, Walker]]] = {}
    always: list[tuple[str, Walker]] = []
    fallbacks: dict[str, list[str]] = {}
    for param in params:
        job = CompileJob(resource_type, compiler, by_url)
        try:
            walkers = compile_param(param, job)
        except Unsupported as e:      # an uncompilable composite: not indexed, but reported
            walkers = []
            job.fallbacks.append(f"not indexed: {e}")
        for walk in walkers:
            subs = getattr(walk, "subs", None)
            if subs is None:
                always.append((param.code, walk))
            else:
                for key, nxt in subs:
                    by_key.setdefault(key, []).append((param.code, nxt))
        if job.fallbacks:
            fallbacks[param.code] = job.fallbacks
    return TypeExtractor(by_key, always, fallbacks)


def compile_param(param, job: CompileJob) -> list[Walker]:
    """Walkers over the resource for one parameter; empty when it indexes nothing on this type.

    With ``job.strict`` (custom SearchParameters), unknown elements and expressions neither
    compiled nor accepted by fhirpathpy raise instead of being skipped.
    """
    if not param.expression or param.type in NOT_INDEXED:
        return []
    return _compile_expression(param.expression, param, job, ctx=None)


def _compile_expression(expression: str, param, job: CompileJob, ctx: str | None) -> list[Walker]:
    def leaf(datatype: str):
        known = datatype[:1].islower() or job.compiler.elements.has_type(datatype)
        return index_convert.leaf(param.type, datatype, param.targets, known)

    if param.type == "composite":
        leaf = _composite_leaf(param, job)
    walkers = []
    for text in split_union(expression):
        try:
            (ops,) = parse(text)
            walk = job.compiler.branch(ops, job.resource_type, leaf, ctx)
        except (Unsupported, SyntaxError) as e:
            if job.strict and isinstance(e, (UnknownElement, SyntaxError)):
                raise
            if not _applies(text, job, ctx):
                continue
            if param.type == "composite":
                raise Unsupported(f"composite expression {text!r} is not compilable") from e
            try:
                if job.strict:
                    check_syntax(text)
                walk = _fallback(text, index_convert.by_shape(param.type))
            except Exception:
                if job.strict:
                    raise
                job.fallbacks.append(f"not indexed: {text}")
                continue
            job.fallbacks.append(text)
        if walk:
            walkers.append(walk)
    return walkers


_FIRST = re.compile(r"\s*\(*\s*([A-Za-z_][A-Za-z0-9_]*)")


def _applies(text: str, job: CompileJob, ctx: str | None) -> bool:
    """Whether a branch we could not parse is about ``job.resource_type`` (by its first name)."""
    m = _FIRST.match(text)
    if ctx is not None or not m or not m[1][:1].isupper():
        return True
    first = m[1]
    if first in (job.resource_type, "Resource", "DomainResource"):
        return True
    return not (job.compiler.is_resource_type(first) or job.compiler.elements.has_type(first))


def _composite_leaf(param, job: CompileJob):
    """For each element the composite's expression selects, one ``Composite`` of the values
    each component's expression yields from that element (all components must yield)."""
    def make(ctx: str) -> Walker | None:
        comps = []
        for url, expression in param.components:
            comp = job.by_url(url)
            if comp is None or comp.type in ("composite", "special"):
                raise Unsupported(f"composite component {url} is not a usable search parameter")
            walkers = _compile_expression(expression, comp, job, ctx)
            if not walkers:
                return None
            comps.append(walkers)
        return _composite(comps) if comps else None
    return make


def _composite(comps: list[list[Walker]]) -> Walker:
    n = len(comps)

    def walk(elem, root, out):
        parts = [()] * n
        for i in range(n - 1, -1, -1):         # the value component is usually the one absent
            values: list = []
            for w in comps[i]:
                w(elem, root, values)
            if not values:
                return
            parts[i] = tuple(dict.fromkeys(values))
        out.append(Composite(tuple(parts)))
    return walk


@lru_cache(maxsize=4096)
def fhirpath(expression: str):
    """fhirpathpy, compiled once per expression, with the R4 model (choice types)."""
    import fhirpathpy
    from fhirpathpy.models import models
    return fhirpathpy.compile(rewrite_resolve(expression), model=models["r4"])


def _fallback(text: str, convert) -> Walker:
    evaluate = fhirpath(text)

    def walk(elem, root, out):
        try:
            results = evaluate(elem, {"resource": root, "rootResource": root})
        except Exception:        # an engine failure on odd data must not fail the write
            return
        for v in results:
            convert(v, root, out)
    return walk


def check_syntax(expression: str) -> None:
    """Raise ``SyntaxError`` unless ``expression`` is well-formed FHIRPath (fhirpathpy itself
    recovers from syntax errors silently, which would hide a broken custom parameter)."""
    from antlr4 import CommonTokenStream, InputStream, Token
    from antlr4.error.ErrorListener import ErrorListener
    from fhirpathpy.parser.generated.FHIRPathLexer import FHIRPathLexer
    from fhirpathpy.parser.generated.FHIRPathParser import FHIRPathParser

    class Raise(ErrorListener):
        def syntaxError(self, recognizer, offending, line, column, msg, e):
            raise SyntaxError(f"column {column}: {msg}")

    lexer = FHIRPathLexer(InputStream(expression))
    lexer.removeErrorListeners()
    lexer.addErrorListener(Raise())
    parser = FHIRPathParser(CommonTokenStream(lexer))
    parser.removeErrorListeners()
    parser.addErrorListener(Raise())
    parser.expression()
    if parser.getCurrentToken().type != Token.EOF:
        raise SyntaxError(f"unexpected {parser.getCurrentToken().text!r}")
