"""Translate a parsed search (``fhir.query``) into SQL over the ``res`` and ``ix_*`` tables.

Every clause becomes a predicate on the resource alias; a parameter's values are one
``rk IN (SELECT ...)`` per value joined with UNION ALL so each branch is one index seek.
Comparison semantics follow https://hl7.org/fhir/R4/search.html#prefix: a stored value is a
range [lo, hi]; ``eq`` means the stored range lies within the search value's range.
"""
from __future__ import annotations

import itertools
from typing import Callable

from ... import errors
from ...fhir import query as q
from .rows import TABLE_OF_TYPE

_MAXCHAR = "\U0010ffff"
_DAY_MS = 86_400_000


class SqlBuilder:
    """Builds SQL for one search. ``pid_of(url)`` maps a search parameter to its id."""

    def __init__(self, pid_of: Callable[[str], int | None], now_ms: int):
        self.pid_of = pid_of
        self.now_ms = now_ms
        self._aliases = itertools.count(1)

    # -- entry points ------------------------------------------------------------------

    def where(self, query: q.SearchQuery, alias: str = "r") -> tuple[str, list]:
        parts = [f"{alias}.deleted = 0"]
        args: list = []
        if query.resource_type:
            parts.append(f"{alias}.type = ?")
            args.append(query.resource_type)
        elif query.types:
            parts.append(f"{alias}.type IN ({','.join('?' * len(query.types))})")
            args.extend(query.types)
        for clause in query.clauses:
            sql, a = self.clause(clause, alias)
            parts.append(sql)
            args.extend(a)
        return " AND ".join(parts), args

    def order_by(self, query: q.SearchQuery, alias: str = "r") -> tuple[str, list]:
        terms, args = [], []
        for key in query.sort:
            direction = "DESC" if key.descending else "ASC"
            if key.special == "_id":
                terms.append(f"{alias}.id {direction}")
                continue
            if key.special == "_lastUpdated":
                terms.append(f"{alias}.updated {direction}")
                continue
            expr, a = self._sort_expr(key, alias)
            # resources without a value are kept and come last, whatever the direction
            terms.append(f"({expr}) IS NULL, ({expr}) {direction}")
            args.extend(a + a)
        terms.append(f"{alias}.rk ASC")
        return ", ".join(terms), args

    # -- clauses -------------------------------------------------------------------------

    def clause(self, c: object, alias: str) -> tuple[str, list]:
        if isinstance(c, q.Leaf):
            return self._leaf(c, alias)
        if isinstance(c, q.Missing):
            return self._missing(c, alias)
        if isinstance(c, q.IdIn):
            return f"{alias}.id IN ({','.join('?' * len(c.ids))})", list(c.ids)
        if isinstance(c, q.TypeIn):
            return f"{alias}.type IN ({','.join('?' * len(c.types))})", list(c.types)
        if isinstance(c, q.LastUpdated):
            ors, args = [], []
            for v in c.values:
                sql, a = self._range_cond(v, f"{alias}.updated", f"{alias}.updated", date=True)
                ors.append(sql)
                args.extend(a)
            return "(" + " OR ".join(ors) + ")", args
        if isinstance(c, (q.AnyOf, q.AllOf)):
            parts, args = [], []
            for sub in c.clauses:
                sql, a = self.clause(sub, alias)
                parts.append(sql)
                args.extend(a)
            if not parts:        # an empty OR matches nothing, an empty AND everything
                return ("0", []) if isinstance(c, q.AnyOf) else ("1", [])
            joiner = " OR " if isinstance(c, q.AnyOf) else " AND "
            return "(" + joiner.join(parts) + ")", args
        if isinstance(c, q.Chain):
            t = f"t{next(self._aliases)}"
            inner, a = self.clause(c.inner, t)
            sql = (f"{alias}.rk IN (SELECT x.rk FROM ix_ref x WHERE x.pid = ? AND x.ttype = ? AND x.tid IN "
                   f"(SELECT {t}.id FROM res {t} WHERE {t}.type = ? AND {t}.deleted = 0 AND {inner}))")
            return sql, [self._pid(c.param), c.target_type, c.target_type] + a
        if isinstance(c, q.Has):
            s = f"s{next(self._aliases)}"
            inner, a = self.clause(c.inner, s)
            sql = (f"{alias}.id IN (SELECT x.tid FROM ix_ref x WHERE x.pid = ? AND x.ttype = ? AND x.rk IN "
                   f"(SELECT {s}.rk FROM res {s} WHERE {s}.type = ? AND {s}.deleted = 0 AND {inner}))")
            return sql, [self._pid(c.param), c.resource_type, c.source_type] + a
        raise errors.NotSupported(f"cannot search with {type(c).__name__}")

    def _missing(self, c: q.Missing, alias: str) -> tuple[str, list]:
        """``:missing``: whether the resource has any index row for the parameter. A reference
        given only as ``Reference.identifier`` is indexed as a token (for ``:identifier``) and
        is a value all the same (https://hl7.org/fhir/R4/search.html#modifiers)."""
        pid = self._pid(c.param)
        op = "NOT IN" if c.missing else "IN"
        sub = f"SELECT rk FROM {TABLE_OF_TYPE[c.param.type]} WHERE pid = ?"
        args = [pid]
        if c.param.type == "reference":
            sub += " UNION ALL SELECT rk FROM ix_tok WHERE pid = ?"
            args.append(pid)
        return f"{alias}.rk {op} ({sub})", args

    def _pid(self, param) -> int:
        pid = self.pid_of(param.url)
        return -1 if pid is None else pid  # never indexed yet: matches nothing

    def _leaf(self, c: q.Leaf, alias: str) -> tuple[str, list]:
        pid = self._pid(c.param)
        branches, args = [], []
        for value in c.values:
            table, cond, a = self._value_cond(c.param, c.modifier, value)
            branches.append(f"SELECT rk FROM {table} WHERE pid = ? AND {cond}")
            args.append(pid)
            args.extend(a)
        op = "NOT IN" if c.negate else "IN"
        return f"{alias}.rk {op} ({' UNION ALL '.join(branches)})", args

    def _value_cond(self, param, modifier, v) -> tuple[str, str, list]:
        kind = param.type
        if isinstance(v, q.TokenQ):
            return "ix_tok", *self._token_cond(v)
        if isinstance(v, q.OfTypeQ):
            if v.type_system is None:
                return "ix_oft", "value = ? AND tcode = ?", [v.value, v.type_code]
            return "ix_oft", "value = ? AND tcode = ? AND tsys = ?", [v.value, v.type_code, v.type_system]
        if isinstance(v, q.StringQ):
            if kind == "token":   # :text
                return "ix_tok", "(text >= ? AND text < ? OR text LIKE ? ESCAPE '\\')", \
                    [v.norm, v.norm + _MAXCHAR, "% " + _like(v.norm) + "%"]
            if modifier == "exact":   # norm = normalise(exact), so the (pid, norm) index finds it
                return "ix_str", "norm = ? AND exact = ?", [v.norm, v.text]
            if modifier == "contains":
                return "ix_str", "norm LIKE ? ESCAPE '\\'", ["%" + _like(v.norm) + "%"]
            return "ix_str", "norm >= ? AND norm < ?", [v.norm, v.norm + _MAXCHAR]
        if isinstance(v, q.RangeQ):
            if v.kind == "date":
                cond, a = self._range_cond(v, "lo", "hi", date=True)
                return "ix_date", cond, a
            cond, a = self._range_cond(v, "lo", "hi", date=False, point="v")
            if v.system is not None:
                cond += " AND sys = ?"
                a.append(v.system)
            if v.code is not None:
                cond += " AND (code = ? OR unit = ?)" if v.system is None else " AND code = ?"
                a.extend([v.code, v.code] if v.system is None else [v.code])
            return "ix_num", cond, a
        if isinstance(v, q.RefQ):
            if v.id is not None and v.type is not None:
                return "ix_ref", "tid = ? AND ttype = ?", [v.id, v.type]
            if v.id is not None:
                return "ix_ref", "tid = ?", [v.id]
            return "ix_ref", "url = ?", [v.url]
        if isinstance(v, q.UriQ):
            return "ix_uri", *self._uri_cond(v.uri, modifier)
        if isinstance(v, q.CompositeQ):
            return "ix_comp", *self._composite_cond(v)
        raise errors.NotSupported(f"cannot search {kind} with {type(v).__name__}")

    @staticmethod
    def _uri_cond(uri: str, modifier: str | None) -> tuple[str, list]:
        """``:below`` matches the uri and those under it by path segment, ``:above`` the uri and
        its parents (https://hl7.org/fhir/R4/search.html#uri): one bounded range seek, or one
        seek per parent."""
        if modifier == "below":
            stem = uri.rstrip("/")
            # the seek range [uri, stem/...] also holds e.g. "stem-x" (- and . sort before /)
            return "uri >= ? AND uri < ? AND (uri = ? OR uri >= ?)", [stem, stem + "/" + _MAXCHAR, stem, stem + "/"]
        if modifier == "above":
            parents = _parents(uri)
            return f"uri IN ({','.join('?' * len(parents))})", parents
        return "uri = ?", [uri]

    @staticmethod
    def _token_cond(v: q.TokenQ, sys_col: str = "sys", code_col: str = "code") -> tuple[str, list]:
        if v.code is None:
            return f"{sys_col} = ?", [v.system]
        if v.system is q.ANY:
            return f"{code_col} = ?", [v.code]
        if v.system is None:
            return f"{code_col} = ? AND {sys_col} IS NULL", [v.code]
        return f"{code_col} = ? AND {sys_col} = ?", [v.code, v.system]

    def _range_cond(self, v: q.RangeQ, lo: str, hi: str, date: bool, point: str | None = None) -> tuple[str, list]:
        """Compare a stored range [lo, hi] with a search value (prefix, implicit range).

        The redundant bounds added below are implied by the comparison (lo <= hi, and a
        stored number's ``point`` value lies in [lo, hi]); they let SQLite seek a bounded
        stretch of the (pid, lo, hi) or (pid, v) index instead of scanning to its end.
        """
        p = v.prefix
        if date:
            vlo, vhi = int(v.lo), int(v.hi)
            eq = (f"{lo} >= ? AND {lo} <= ? AND {hi} <= ?", [vlo, vhi, vhi])   # date ranges are inclusive
        else:
            vlo, vhi = v.lo, v.hi
            eq = (f"{lo} >= ? AND {hi} < ?", [vlo, vhi])
            if point is not None:
                eq = (f"{point} >= ? AND {point} < ? AND " + eq[0], [vlo, vhi] + eq[1])
        if p == "eq":
            return eq
        if p == "ne":
            return f"NOT ({eq[0]})", eq[1]
        if p == "ap":
            return self._approximately(v, lo, hi, date)
        # dates compare with the ends of the search value's range, numbers with the value itself
        below, above = (vlo, vhi) if date else (v.value, v.value)
        if p == "gt":
            return f"{hi} > ?", [above]
        if p == "lt":
            return f"{lo} < ?", [below]
        if p == "ge":
            return f"{hi} >= ?", [below]
        if p == "le":
            return f"{lo} <= ?", [above]
        if p == "sa":
            if point is not None:
                return f"{point} > ? AND {lo} > ?", [above, above]
            return f"{lo} > ?", [above]
        if p == "eb":
            bound = point if point is not None else (lo if date else None)
            if bound is not None:
                return f"{bound} < ? AND {hi} < ?", [below, below]
            return f"{hi} < ?", [below]
        raise errors.Invalid(f"unknown prefix '{p}'")

    def _approximately(self, v: q.RangeQ, lo: str, hi: str, date: bool) -> tuple[str, list]:
        """``ap``: within 10 % of the value (dates: of the gap to now, at least a day)
        (https://hl7.org/fhir/R4/search.html#prefix)."""
        if date:
            vlo, vhi = int(v.lo), int(v.hi)
            slack = max(_DAY_MS, abs(self.now_ms - vlo) // 10)
            return f"{lo} <= ? AND {hi} >= ?", [vhi + slack, vlo - slack]
        slack = abs(v.value) * 0.1
        return f"{lo} <= ? AND {hi} >= ?", [v.value + slack, v.value - slack]

    def _composite_cond(self, v: q.CompositeQ) -> tuple[str, list]:
        if len(v.parts) != 2:
            raise errors.NotSupported("only composite parameters with two components are supported")
        first, second = v.parts
        conds, args = [], []
        if isinstance(first, q.TokenQ):
            sql, a = self._token_cond(first, "a_sys", "a_code")
        elif isinstance(first, q.RefQ):
            sql, a = ("a_code = ?" + (" AND a_sys = ?" if first.type else ""),
                      [first.id or first.url] + ([first.type] if first.type else []))
        elif isinstance(first, q.UriQ):
            sql, a = "a_code = ?", [first.uri]
        elif isinstance(first, q.StringQ):
            sql, a = "a_code >= ? AND a_code < ?", [first.norm, first.norm + _MAXCHAR]
        else:
            raise errors.NotSupported("composite parameters must start with a token, reference, uri or string")
        conds.append(sql)
        args.extend(a)
        if isinstance(second, q.RangeQ):
            sql, a = self._range_cond(second, "b_lo", "b_hi", date=second.kind == "date")
            conds.append(sql)
            args.extend(a)
            if second.system is not None:
                conds.append("b_sys = ?")
                args.append(second.system)
            if second.code is not None:
                conds.append("b_code = ?")
                args.append(second.code)
        elif isinstance(second, q.TokenQ):
            sql, a = self._token_cond(second, "b_sys", "b_code")
            conds.append(sql)
            args.extend(a)
        elif isinstance(second, q.StringQ):
            conds.append("b_code >= ? AND b_code < ?")
            args.extend([second.norm, second.norm + _MAXCHAR])
        elif isinstance(second, q.RefQ):
            conds.append("b_code = ?")
            args.append(second.id or second.url)
        else:
            raise errors.NotSupported("unsupported second component in composite search")
        return " AND ".join(conds), args

    def _sort_expr(self, key: q.SortKey, alias: str) -> tuple[str, list]:
        param = key.param
        table = TABLE_OF_TYPE[param.type]
        column = {
            "ix_str": "norm", "ix_tok": "code", "ix_ref": "tid", "ix_uri": "uri", "ix_num": "v",
        }.get(table)
        if table == "ix_date":
            agg = "MAX(hi)" if key.descending else "MIN(lo)"
        else:
            agg = f"{'MAX' if key.descending else 'MIN'}({column})"
        return f"SELECT {agg} FROM {table} WHERE rk = {alias}.rk AND pid = ?", [self._pid(param)]


def _parents(uri: str) -> list[str]:
    """``uri`` and every prefix of it that ends just before or at a ``/`` (its parents)."""
    out = [uri]
    for i, ch in enumerate(uri):
        if ch == "/" and i > 0 and uri[i - 1] != "/" and uri[i - 1] != ":":
            out += [uri[:i], uri[:i + 1]]
    return list(dict.fromkeys(out))[:500]


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
