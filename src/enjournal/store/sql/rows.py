"""Turn extracted index values (``fhir.index_values``) into rows of the ``ix_*`` tables."""
from __future__ import annotations

from ...fhir.index_values import (Composite, DateRange, IdentifierOfType, Number, Quantity, Reference,
                                  String, Token, Uri)

# the columns of each table's rows as ``add_rows`` and the units build them (a backend may
# add its own, e.g. PostgreSQL's distribution key)
COLUMNS: dict[str, tuple[str, ...]] = {
    "res": ("rk", "type", "id", "version", "seq", "updated", "deleted", "pat"),
    "hist": ("seq", "rk", "version", "updated", "method", "tx", "body"),
    "ix_str": ("pid", "norm", "exact", "rk"),
    "ix_tok": ("pid", "sys", "code", "text", "rk", "cp"),
    "ix_oft": ("pid", "tsys", "tcode", "value", "rk"),
    "ix_date": ("pid", "lo", "hi", "rk"),
    "ix_num": ("pid", "v", "lo", "hi", "sys", "code", "unit", "rk"),
    "ix_ref": ("pid", "ttype", "tid", "url", "rk"),
    "ix_uri": ("pid", "uri", "rk"),
    "ix_comp": ("pid", "a_sys", "a_code", "b_sys", "b_code", "b_lo", "b_hi", "c_lo", "c_hi", "rk"),
}
INDEX_TABLES = ("ix_str", "ix_tok", "ix_oft", "ix_date", "ix_num", "ix_ref", "ix_uri", "ix_comp")
RK_COLUMN = {table: columns.index("rk") for table, columns in COLUMNS.items()}


def param_key(resource_type: str | None, param) -> str:
    """The key a parameter's index rows are stored under. Parameters defined on Resource or
    DomainResource share one key for all types (system-level search); every other parameter
    gets one per resource type, so ``Condition?patient=`` never reads the Observation rows of
    the shared ``clinical-patient`` definition."""
    if resource_type is None or "Resource" in param.base or "DomainResource" in param.base:
        return param.url
    return f"{resource_type}|{param.url}"


# which table a search-parameter type's values live in (for :missing and sorting)
TABLE_OF_TYPE = {
    "string": "ix_str", "token": "ix_tok", "date": "ix_date", "number": "ix_num",
    "quantity": "ix_num", "reference": "ix_ref", "uri": "ix_uri", "composite": "ix_comp",
}


def patient_of(values: list) -> str | None:
    """The patient a resource belongs to, from its extracted values: the id of the one Patient
    it refers to through any reference parameter, ``'*'`` when it refers to several, None
    when to none. Every resource a ``Patient/X`` reference search can find has X or '*'."""
    found = None
    for _code, value in values:
        if type(value) is Reference and value.type == "Patient" and value.url is None:
            if found is None:
                found = value.id
            elif found != value.id:
                return "*"
    return found


def add_rows(pending: dict[str, list], pid: int, rk: int, value: object, patient: str | None = None) -> None:
    """Append the row(s) for one index value to ``pending`` (table name -> list of tuples)."""
    cls = type(value)
    if cls is Token:
        pending["ix_tok"].append((pid, value.system, value.code, value.text, rk, patient))
    elif cls is String:
        pending["ix_str"].append((pid, value.norm, value.exact, rk))
    elif cls is Reference:
        # an absolute URL names another server's resource (this server's are made relative on
        # write): it is found by its URL only, never as a local Type/id (compartments, _include)
        if value.url is None:
            pending["ix_ref"].append((pid, value.type, value.id, None, rk))
        else:
            pending["ix_ref"].append((pid, None, None, value.url, rk))
    elif cls is DateRange:
        pending["ix_date"].append((pid, value.lo, value.hi, rk))
    elif cls is Quantity:
        pending["ix_num"].append((pid, value.value, value.lo, value.hi, value.system, value.code, value.unit, rk))
    elif cls is Number:
        pending["ix_num"].append((pid, value.value, value.lo, value.hi, None, None, None, rk))
    elif cls is Uri:
        pending["ix_uri"].append((pid, value.uri, rk))
    elif cls is IdentifierOfType:
        pending["ix_oft"].append((pid, value.type_system, value.type_code, value.value, rk))
    elif cls is Composite:
        _composite_rows(pending["ix_comp"], pid, rk, value)


def _composite_rows(out: list, pid: int, rk: int, value: Composite) -> None:
    """Composites as rows of (a, b[, c]): a is a coded key, b any value, c a range (the
    third component exists only in MolecularSequence's token$start$end coordinates)."""
    if len(value.parts) == 2:
        thirds = [(None, None)]
    elif len(value.parts) == 3:
        thirds = [(v.lo, v.hi) for v in value.parts[2] if type(v) in (Number, Quantity, DateRange)]
    else:
        return
    for first in value.parts[0]:
        a_sys, a_code = _key(first)
        if a_code is None:
            continue
        for second in value.parts[1]:
            b_sys, b_code, lo, hi = _second(second)
            for c_lo, c_hi in thirds:
                out.append((pid, a_sys, a_code, b_sys, b_code, lo, hi, c_lo, c_hi, rk))


def _key(value: object) -> tuple[str | None, str | None]:
    cls = type(value)
    if cls is Token:
        return value.system, value.code
    if cls is Reference:
        return value.type, value.id or value.url
    if cls is Uri:
        return None, value.uri
    if cls is String:
        return None, value.norm
    return None, None


def _second(value: object) -> tuple:
    cls = type(value)
    if cls is Quantity:
        # with no code, the unit is what a search's "value||unit" names
        return value.system, value.code if value.code is not None else value.unit, value.lo, value.hi
    if cls in (Number, DateRange):
        return None, None, value.lo, value.hi
    sys_, code = _key(value)
    return sys_, code, None, None
