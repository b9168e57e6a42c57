"""Translate a parsed search (``fhir.query``) into SQL over the ``res`` and ``ix_*`` tables.

The plan follows Blaze: one clause *drives* (its index seek yields the candidate keys, as
``r.rk IN (SELECT rk ...)`` with every other term on ``r`` kept off the indexes), and every
other clause is a *probe* of each candidate's own index rows (the ``ix_*_rk`` indexes), so a
search costs in proportion to its most selective clause, never to the size of the database.
The driver is the seekable clause with the fewest rows, counted with a capped index-only
query when the store passes ``count``.
Comparison semantics follow https://hl7.org/fhir/R4/search.html#prefix: a stored value is a
range [lo, hi]; ``eq`` means the stored range lies within the search value's range.
"""
from __future__ import annotations

import itertools
from typing import Callable

from ... import errors
from ...fhir import query as q
from .rows import TABLE_OF_TYPE, param_key

_MAXCHAR = "\U0010ffff"
_DAY_MS = 86_400_000
ESTIMATE_CAP = 2000          # counting further costs more than a wrong choice of driver...
TIE_CAP = 50_000             # ...unless two clauses of a kind both reach it (status=final&code=x)
SCAN_COST = 100 * TIE_CAP
# Ties at the cap go to the kind of clause that is usually the most selective.
_KIND_RANK = {"reference": 1, "token": 2, "composite": 2, "uri": 2, "string": 3,
              "Chain": 4, "Has": 5, "date": 6, "number": 7, "quantity": 7}

Count = Callable[[str, list], int]      # runs a SELECT COUNT(*) statement


class SqlBuilder:
    """Builds SQL for one search. ``pid_of(type, param)`` maps a search parameter to its id;
    ``count(sql, args)``, when given, runs the capped counts that choose the driving clause."""

    def __init__(self, pid_of: Callable[[str | None, object], int | None], now_ms: int, count: Count | None = None,
                 hints: bool = True, max_text: int | None = None):
        self.pid_of = pid_of
        # SQLite's planner needs steering (INDEXED BY, a unary + to keep an index out of
        # the plan); PostgreSQL's cost-based planner does not, and knows neither form
        self.hints = hints
        self._plus = "+" if hints else ""
        # PostgreSQL turns EXISTS into a join it may drive from; OFFSET 0 keeps each probe a
        # lookup of the candidate's own rows (its estimates for one patient's rows are poor)
        self._fence = "" if hints else " OFFSET 0"
        self.max_text = max_text        # index values are cut to this many characters
        self.now_ms = now_ms
        self.count = count
        self._aliases = itertools.count(1)
        self._by_patient: dict[int, str] = {}    # id(token clause) -> patient id for its seek
        self._chosen: dict[tuple, object] = {}    # (types, clause ids) -> driving clause
        # set by page_source: the page is read from one patient's rows of the driving index and
        # every other clause is a fenced probe, so the plan is the same whatever the values
        # (PostgreSQL may keep one generic plan for it instead of planning each time)
        self.one_patient = False

    # -- entry points ------------------------------------------------------------------

    def where(self, query: q.SearchQuery, alias: str = "r", snapshot: int | None = None) -> tuple[str, list]:
        """The condition on ``res {alias}`` for the live resources matching ``query`` (and
        with a key at most ``snapshot``, for stable paging)."""
        types = (query.resource_type,) if query.resource_type else tuple(query.types)
        return self._match(types, list(query.clauses), alias, snapshot, key_order=not query.sort)

    def matches(self, clauses: list, alias: str = "r") -> tuple[str, list]:
        """The condition that ``res {alias}`` satisfies every one of ``clauses``, each probed
        on the candidate's own rows: for a scan in key order that already has its candidate
        (a bulk export's ``_typeFilter``), where a driving seek would only add work."""
        parts, args = [], []
        for c in clauses:
            sql, a = self._probe(c, alias)
            parts.append(sql)
            args.extend(a)
        return "(" + (" AND ".join(parts) or "1 = 1") + ")", args

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
            expr, a = self._sort_expr(key, alias, query.resource_type)
            # resources without a value are kept and come last, whatever the direction
            terms.append(f"({expr}) {direction} NULLS LAST")
            args.extend(a)
        terms.append(f"{alias}.rk ASC")
        return ", ".join(terms), args

    # -- planning ------------------------------------------------------------------------

    def page_source(self, query: q.SearchQuery, snapshot: int | None = None) -> tuple[str, str, list]:
        """(FROM, WHERE, args) for the keys of a page of ``query``, as ``r`` with a column
        ``rk``, for ``ORDER BY order_by(query)``. Usually ``res r`` with ``where``. On
        PostgreSQL, when the driving clause's rows are the one type's own and nothing else
        needs the resource row, the candidates come straight from the driving index and are
        probed there: index rows exist only for current, live resources, so checking each
        candidate's row in ``res`` for its type and deletion finds nothing new (a third of an
        Observation search by patient, code and date). SQLite's steered plans stay as they are."""
        types = (query.resource_type,) if query.resource_type else tuple(query.types)
        clauses = list(query.clauses)
        if not self.hints and len(types) == 1 and all(s.special not in ("_id", "_lastUpdated") for s in query.sort):
            driver = self._choose(types, clauses)
            if self._own_rows(driver, types[0]) and all(self._on_key(c) for c in clauses if c is not driver):
                keys, args = self._keys(driver)
                parts = []
                if snapshot is not None:
                    parts.append("r.rk <= ?")
                    args.append(snapshot)
                for c in clauses:
                    if c is not driver:
                        sql, a = self._probe(c, "r")
                        parts.append(sql)
                        args.extend(a)
                self.one_patient = self._one_patient(driver) and not any(_has_chain(c) for c in clauses)
                return f"(SELECT DISTINCT rk FROM ({keys}) AS k) r", " AND ".join(parts) or "TRUE", args
        where, args = self.where(query, snapshot=snapshot)
        return "res r", where, args

    def _own_rows(self, c, resource_type: str) -> bool:
        """Whether the seek of ``c`` yields keys of live ``resource_type`` resources only: a
        seekable Leaf (or OR of them) of a parameter stored per type (param_key)."""
        if isinstance(c, q.AnyOf):
            return bool(c.clauses) and all(self._own_rows(sub, resource_type) for sub in c.clauses)
        return (isinstance(c, q.Leaf) and not c.negate
                and param_key(resource_type, c.param) != param_key(None, c.param)
                and all(seekable for _t, _c, _a, seekable in self._branches(c)))

    def _one_patient(self, c) -> bool:
        """Whether the seek of ``c`` reads one patient's rows: a token seek pinned to the
        patient, or a plain reference to ``Patient/X``."""
        if id(c) in self._by_patient:
            return True
        if isinstance(c, q.AnyOf):
            return bool(c.clauses) and all(self._one_patient(sub) for sub in c.clauses)
        return (isinstance(c, q.Leaf) and not c.negate and c.modifier is None and c.param.type == "reference"
                and bool(c.values) and all(isinstance(v, q.RefQ) and v.type == "Patient" and v.url is None
                                           and v.id for v in c.values))

    def _on_key(self, c) -> bool:
        """Whether probing ``c`` needs only the candidate's key (not its ``res`` row)."""
        if isinstance(c, (q.AnyOf, q.AllOf)):
            return all(self._on_key(sub) for sub in c.clauses)
        return isinstance(c, (q.Leaf, q.Missing, q.Chain))

    def _choose(self, types: tuple, clauses: list):
        """The driving clause, chosen once per list of clauses (choosing may count rows)."""
        key = (types, tuple(map(id, clauses)))
        if key not in self._chosen:
            self._chosen[key] = self._patient_token(types, clauses) or self._driver(clauses)
        return self._chosen[key]

    def _match(self, types: tuple, clauses: list, alias: str, snapshot: int | None = None,
               key_order: bool = False) -> tuple[str, list]:
        """The condition on ``res {alias}``; ``key_order``: the rows are wanted by key (no _sort)."""
        driver = self._choose(types, clauses)
        # with a driving seek, a unary + keeps SQLite from scanning the type index instead;
        # a bare listing of a common type is fastest read in key order, stopping at the page end
        off = self._plus if driver is not None and not isinstance(driver, (q.IdIn, q.Has)) else ""
        if driver is None and not clauses and key_order and len(types) == 1 and self._common(types[0]):
            off = self._plus
        parts, args = [f"{alias}.deleted = 0"], []
        if len(types) == 1:
            parts.append(f"{off}{alias}.type = ?")
        elif types:
            parts.append(f"{off}{alias}.type IN ({_marks(types)})")
        args.extend(types)
        if snapshot is not None:
            parts.append(f"{self._plus if driver is not None else ''}{alias}.rk <= ?")
            args.append(snapshot)
        if driver is not None:
            sql, a = self._seek(driver, alias)
            parts.append(sql)
            args.extend(a)
        for c in clauses:
            if c is not driver:
                sql, a = self._probe(c, alias)
                parts.append(sql)
                args.extend(a)
        return " AND ".join(parts), args

    def _patient_token(self, types: tuple, clauses: list):
        """A token clause to seek within one patient's resources, when the search also has a
        ``Patient/X`` reference clause: token rows carry the patient (``cp``), so
        ``Observation?subject=Patient/X&code=Y`` reads X's rows for Y only. The reference
        clause is still checked on each candidate (the row's patient may come from another
        reference)."""
        if len(types) != 1 or types[0] == "Patient":
            return None
        patient = None
        for c in clauses:
            if (isinstance(c, q.Leaf) and not c.negate and c.modifier is None and c.param.type == "reference"
                    and len(c.values) == 1 and isinstance(c.values[0], q.RefQ)):
                v = c.values[0]
                if v.type == "Patient" and v.url is None and v.id:
                    patient = v.id
                    break
        if patient is None:
            return None
        for c in clauses:
            if (isinstance(c, q.Leaf) and not c.negate and c.modifier is None and c.param.type == "token"
                    and all(isinstance(v, q.TokenQ) and v.code is not None for v in c.values)):
                self._by_patient[id(c)] = patient
                return c
        return None

    def _common(self, resource_type: str) -> bool:
        if self.count is None:
            return False
        sql = f"SELECT COUNT(*) FROM (SELECT 1 FROM res WHERE type = ? LIMIT {ESTIMATE_CAP}) AS n"
        return self.count(sql, [resource_type]) >= ESTIMATE_CAP

    def _driver(self, clauses: list):
        """The clause expected to yield the fewest keys (None: scan the type). Rows are only
        counted when there is a choice to make, and counted further on a tie at the cap."""
        able = [c for c in clauses if self._cost(c, counted=False) is not None]
        if len(able) <= 1:
            return able[0] if able else None
        costs = [self._cost(c, ESTIMATE_CAP) for c in able]
        best = min(costs)
        tied = [c for c, cost in zip(able, costs) if cost == best]
        if len(tied) > 1 and best[0] == ESTIMATE_CAP:
            return min(tied, key=lambda c: self._cost(c, TIE_CAP))
        return able[costs.index(best)]

    def _cost(self, c, counted: int | bool) -> tuple | None:
        """(estimated rows, kind rank) for a clause that can drive; None when it cannot.
        ``counted``: count the rows, up to that many (False: do not count)."""
        if isinstance(c, q.IdIn):
            return (0, 0)            # primary-key lookups: the cheapest seek there is
        if isinstance(c, (q.Chain, q.Has)):
            inner = self._cost(c.inner, counted)     # how many targets (sources) match: a fair proxy
            rows = inner[0] if inner is not None else SCAN_COST
            return (rows, _KIND_RANK[type(c).__name__])
        if isinstance(c, q.AnyOf) and c.clauses:
            if any(isinstance(sub, (q.IdIn, q.Has)) for sub in c.clauses):
                return None
            costs = [self._cost(sub, counted) for sub in c.clauses]
            if any(x is None for x in costs):
                return None
            return (min(SCAN_COST, sum(x[0] for x in costs)), max(x[1] for x in costs))
        if not isinstance(c, q.Leaf) or c.negate:
            return None
        rank = _KIND_RANK.get(c.param.type, 8)
        if not all(seekable for _t, _c, _a, seekable in self._branches(c)):
            # a scan of the parameter's index rows: worse than any seek, better than the type
            return (SCAN_COST, rank)
        if not counted or self.count is None:
            return (ESTIMATE_CAP, rank)
        keys, args = self._keys(c)
        return (self.count(f"SELECT COUNT(*) FROM ({keys} LIMIT {int(counted)}) AS n", args), rank)

    # -- seeks: the driving clause as keys from an index ---------------------------------

    def _seek(self, c, alias: str) -> tuple[str, list]:
        if isinstance(c, q.IdIn):
            return _id_in(alias, c.ids)
        if isinstance(c, q.Has):
            ids, args = self._has_ids(c)
            return f"{alias}.id IN ({ids})", args
        keys, args = self._keys(c)
        return f"{alias}.rk IN ({keys})", args

    def _keys(self, c) -> tuple[str, list]:
        """A SELECT of the keys matching a seekable Leaf, AnyOf (of Leafs) or Chain."""
        if isinstance(c, q.AnyOf):
            parts, args = [], []
            for sub in c.clauses:
                sql, a = self._keys(sub)
                parts.append(sql)
                args.extend(a)
            return _union(parts), args
        if isinstance(c, q.Chain):
            t = f"t{next(self._aliases)}"
            inner, a = self._match((c.target_type,), [c.inner], t)
            return (f"SELECT x.rk FROM ix_ref x WHERE x.tid IN (SELECT {t}.id FROM res {t} WHERE {inner}) "
                    f"AND x.ttype = ? AND x.pid = ?", a + [c.target_type, self._pid(c.param, c.resource_type)])
        pid = self._pid(c.param, c.resource_type)
        patient = self._by_patient.get(id(c))
        parts, args = [], []
        for table, cond, a, _seekable in self._branches(c):
            if patient is not None:
                for cp in (patient, "*"):
                    parts.append(f"SELECT rk FROM ix_tok{self._by('ix_tok_cp')} WHERE pid = ? AND cp = ? AND {cond}")
                    args.extend([pid, cp] + a)
                continue
            parts.append(f"SELECT rk FROM {table} WHERE pid = ? AND {cond}")
            args.extend([pid] + a)
        return _union(parts), args

    def _has_ids(self, c: q.Has) -> tuple[str, list]:
        """A SELECT of the ids that sources matching ``c.inner`` refer to through ``c.param``."""
        s = f"s{next(self._aliases)}"
        inner, a = self._match((c.source_type,), [c.inner], s)
        return (f"SELECT x.tid FROM ix_ref x WHERE x.rk IN (SELECT {s}.rk FROM res {s} WHERE {inner}) "
                f"AND x.pid = ? AND x.ttype = ?", a + [self._pid(c.param, c.source_type), c.resource_type])

    # -- probes: every other clause, checked on one candidate's own rows ------------------

    def _probe(self, c, alias: str) -> tuple[str, list]:
        if isinstance(c, q.Leaf):
            return self._probe_leaf(c, alias)
        if isinstance(c, q.Missing):
            return self._missing(c, alias)
        if isinstance(c, q.IdIn):
            return _id_in(alias, c.ids)
        if isinstance(c, q.TypeIn):
            return f"{self._plus}{alias}.type IN ({_marks(c.types)})", list(c.types)
        if isinstance(c, q.LastUpdated):
            ors, args = [], []
            for v in c.values:
                sql, a = self._range_cond(v, f"{alias}.updated", f"{alias}.updated", date=True)
                ors.append(f"({sql})")
                args.extend(a)
            return _any(ors), args
        if isinstance(c, (q.AnyOf, q.AllOf)):
            parts, args = [], []
            for sub in c.clauses:
                sql, a = self._probe(sub, alias)
                parts.append(sql)
                args.extend(a)
            if not parts:        # an empty OR matches nothing, an empty AND everything
                return ("1 = 0", []) if isinstance(c, q.AnyOf) else ("1 = 1", [])
            if isinstance(c, q.AnyOf):
                return _any(parts), args
            return "(" + " AND ".join(parts) + ")", args
        if isinstance(c, q.Chain):
            # follow the candidate's own reference(s) and probe the target found
            t = f"t{next(self._aliases)}"
            inner, a = self._probe(c.inner, t)
            return (f"EXISTS (SELECT 1 FROM ix_ref x{self._by('ix_ref_rk')} JOIN res {t} ON {t}.type = x.ttype "
                    f"AND {t}.id = x.tid WHERE x.rk = {alias}.rk AND x.pid = ? AND x.ttype = ? "
                    f"AND {t}.deleted = 0 AND {inner}{self._fence})", [self._pid(c.param, c.resource_type),
                                                                       c.target_type] + a)
        if isinstance(c, q.Has):
            ids, args = self._has_ids(c)
            return f"{self._plus}{alias}.id IN ({ids})", args
        raise errors.NotSupported(f"cannot search with {type(c).__name__}")

    def _probe_leaf(self, c: q.Leaf, alias: str) -> tuple[str, list]:
        """``[NOT] EXISTS`` a row of the candidate for the parameter with any of the values. The
        rows are found by key (INDEXED BY): the value indexes would scan every resource's."""
        branches = self._branches(c)
        tables = {table for table, *_ in branches}
        parts, args = [], []
        for table in sorted(tables):
            conds = [(cond, a) for t, cond, a, _s in branches if t == table]
            parts.append(f"EXISTS (SELECT 1 FROM {table}{self._by(table + '_rk')} WHERE rk = {alias}.rk AND pid = ? "
                         f"AND {_any([f'({cond})' for cond, _a in conds])}{self._fence})")
            args.append(self._pid(c.param, c.resource_type))
            for _cond, a in conds:
                args.extend(a)
        sql = parts[0] if len(parts) == 1 else _any(parts)
        return (f"NOT {sql}" if c.negate else sql), args

    def _missing(self, c: q.Missing, alias: str) -> tuple[str, list]:
        """``:missing``: whether the resource has any index row for the parameter. A reference
        given only as ``Reference.identifier`` is indexed as a token (for ``:identifier``) and
        is a value all the same (https://hl7.org/fhir/R4/search.html#modifiers)."""
        pid = self._pid(c.param, c.resource_type)
        tables = [TABLE_OF_TYPE[c.param.type]] + (["ix_tok"] if c.param.type == "reference" else [])
        exists = " OR ".join(f"EXISTS (SELECT 1 FROM {t}{self._by(t + '_rk')} WHERE rk = {alias}.rk AND pid = ?"
                             f"{self._fence})" for t in tables)
        return (f"NOT ({exists})" if c.missing else f"({exists})"), [pid] * len(tables)

    @staticmethod
    def _cut(v, n: int):
        """A search value as the index holds it when index values are cut to ``n`` characters
        (PostgreSQL): a longer value is then found, with any other that agrees on the first
        ``n`` characters. ``:exact`` still compares the whole string (``exact`` is not cut)."""
        def c(text):
            return text[:n] if type(text) is str and len(text) > n else text
        if isinstance(v, q.TokenQ):
            return q.TokenQ(c(v.system), c(v.code))
        if isinstance(v, q.OfTypeQ):
            return q.OfTypeQ(c(v.type_system), c(v.type_code), c(v.value))
        if isinstance(v, q.StringQ):
            return q.StringQ(v.text, c(v.norm))
        if isinstance(v, q.RefQ):
            return q.RefQ(c(v.type), c(v.id), c(v.url))
        if isinstance(v, q.UriQ):
            return q.UriQ(c(v.uri))
        return v

    def _by(self, index: str) -> str:
        return f" INDEXED BY {index}" if self.hints else ""

    def _pid(self, param, resource_type: str | None) -> int:
        pid = self.pid_of(resource_type, param)
        return -1 if pid is None else pid  # never indexed yet: matches nothing

    # -- values --------------------------------------------------------------------------

    def _branches(self, c: q.Leaf) -> list[tuple[str, str, list, bool]]:
        """(table, condition, args, seekable) per value; seekable when the condition bounds
        a seek of the table's value index (not a scan of all of the parameter's rows)."""
        return [self._value_cond(c.param, c.modifier, v) for v in c.values]

    def _value_cond(self, param, modifier, v) -> tuple[str, str, list, bool]:
        if self.max_text is not None:
            v = self._cut(v, self.max_text)
        kind = param.type
        if isinstance(v, q.TokenQ):
            return "ix_tok", *self._token_cond(v), v.code is not None
        if isinstance(v, q.OfTypeQ):
            if v.type_system is None:
                return "ix_oft", "value = ? AND tcode = ?", [v.value, v.type_code], True
            return "ix_oft", "value = ? AND tcode = ? AND tsys = ?", [v.value, v.type_code, v.type_system], True
        if isinstance(v, q.StringQ):
            if kind == "token":   # :text
                return "ix_tok", "(text >= ? AND text < ? OR text LIKE ? ESCAPE '\\')", \
                    [v.norm, v.norm + _MAXCHAR, "% " + _like(v.norm) + "%"], False
            if modifier == "exact":   # norm = normalise(exact), so the (pid, norm) index finds it
                return "ix_str", "norm = ? AND exact = ?", [v.norm, v.text], True
            if modifier == "contains":
                return "ix_str", "norm LIKE ? ESCAPE '\\'", ["%" + _like(v.norm) + "%"], False
            return "ix_str", "norm >= ? AND norm < ?", [v.norm, v.norm + _MAXCHAR], True
        if isinstance(v, q.RangeQ):
            if v.kind == "date":
                cond, a = self._range_cond(v, "lo", "hi", date=True)
                return "ix_date", cond, a, v.prefix not in ("gt", "ge", "ne")
            cond, a = self._range_cond(v, "lo", "hi", date=False, point="v")
            if v.system is not None:
                cond += " AND sys = ?"
                a.append(v.system)
            if v.code is not None:
                cond += " AND (code = ? OR unit = ?)" if v.system is None else " AND code = ?"
                a.extend([v.code, v.code] if v.system is None else [v.code])
            return "ix_num", cond, a, v.prefix in ("eq", "sa", "eb")
        if isinstance(v, q.RefQ):
            # an absolute URL (or canonical) matches that URL exactly; a relative reference
            # matches relative ones only, never an external server's Patient/123
            if v.url is not None:
                return "ix_ref", "url = ?", [v.url], True
            if v.type is not None:
                return "ix_ref", "tid = ? AND ttype = ? AND url IS NULL", [v.id, v.type], True
            return "ix_ref", "tid = ? AND url IS NULL", [v.id], True
        if isinstance(v, q.UriQ):
            return "ix_uri", *self._uri_cond(v.uri, modifier), True
        if isinstance(v, q.CompositeQ):
            first = v.parts[0]
            return "ix_comp", *self._composite_cond(v), not (isinstance(first, q.TokenQ) and first.code is None)
        raise errors.NotSupported(f"cannot search {kind} with {type(v).__name__}")

    @staticmethod
    def _uri_cond(uri: str, modifier: str | None) -> tuple[str, list]:
        """``:below`` matches the uri and those under it by path segment, ``:above`` the uri and
        its parents (https://hl7.org/fhir/R4/search.html#uri): one bounded range seek, or one
        seek per parent."""
        if modifier == "below":
            stem = uri.rstrip("/")
            # the seek range [stem, stem/...] also holds e.g. "stem-x" (- and . sort before /)
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
        if len(v.parts) not in (2, 3):
            raise errors.NotSupported("composite parameters with more than three components are not supported")
        first, second = v.parts[:2]
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
        if len(v.parts) == 3:
            third = v.parts[2]
            if not isinstance(third, q.RangeQ):
                raise errors.NotSupported("the third component of a composite must be a number, quantity or date")
            sql, a = self._range_cond(third, "c_lo", "c_hi", date=third.kind == "date")
            conds.append(sql)
            args.extend(a)
        return " AND ".join(conds), args

    def _sort_expr(self, key: q.SortKey, alias: str, resource_type: str | None) -> tuple[str, list]:
        param = key.param
        table = TABLE_OF_TYPE[param.type]
        column = {
            "ix_str": "norm", "ix_tok": "code", "ix_ref": "tid", "ix_uri": "uri", "ix_num": "v",
        }.get(table)
        if table == "ix_date":
            agg = "MAX(hi)" if key.descending else "MIN(lo)"
        else:
            agg = f"{'MAX' if key.descending else 'MIN'}({column})"
        return f"SELECT {agg} FROM {table}{self._by(table + '_rk')} WHERE rk = {alias}.rk AND pid = ?", [self._pid(param, resource_type)]


def _marks(values) -> str:
    return ",".join("?" * len(values))


def _id_in(alias: str, ids: tuple) -> tuple[str, list]:
    """``alias.id`` is one of ``ids``; none matches nothing (PostgreSQL refuses ``IN ()``)."""
    if not ids:
        return "1 = 0", []
    return f"{alias}.id IN ({_marks(ids)})", list(ids)


def _parents(uri: str) -> list[str]:
    """``uri`` and every prefix of it that ends just before or at a ``/`` (its parents)."""
    out = [uri]
    for i, ch in enumerate(uri):
        if ch == "/" and i > 0 and uri[i - 1] != "/" and uri[i - 1] != ":":
            out += [uri[:i], uri[:i + 1]]
    return list(dict.fromkeys(out))[:500]


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _has_chain(c) -> bool:
    """Whether a clause holds a chained search (its inner search's plan depends on its values)."""
    if isinstance(c, (q.AnyOf, q.AllOf)):
        return any(_has_chain(sub) for sub in c.clauses)
    return isinstance(c, (q.Chain, q.Has))


_UNION_TERMS = 200     # SQLite takes at most 500 SELECTs in one compound statement


def _union(parts: list[str]) -> str:
    """``parts`` (SELECTs of one column) as one UNION ALL, nested in groups where there are
    many (a parameter with hundreds of values): each group is a compound SELECT of its own."""
    if len(parts) <= _UNION_TERMS:
        return " UNION ALL ".join(parts)
    groups = [" UNION ALL ".join(parts[i:i + _UNION_TERMS]) for i in range(0, len(parts), _UNION_TERMS)]
    return _union([f"SELECT * FROM ({g}) AS u{i}" for i, g in enumerate(groups)])


_OR_TERMS = 64         # SQLite parses an expression at most 1,000 levels deep


def _any(conds: list[str]) -> str:
    """``conds`` ORed, parenthesised in groups where there are many, so the expression stays
    shallow (each OR is a level of the parse tree: 1,000 values would be 1,000 levels)."""
    if len(conds) <= _OR_TERMS:
        return "(" + " OR ".join(conds) + ")"
    return _any([_any(conds[i:i + _OR_TERMS]) for i in range(0, len(conds), _OR_TERMS)])
