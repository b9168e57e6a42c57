"""The limits on what one request may ask for, in one place (docs/api.md, "Limits").

Each keeps a request inside what both databases answer quickly and alike: past them SQLite
refuses a statement (its parser's stack overflows on a fourth chained hop) where PostgreSQL
would plan for seconds. A request beyond a limit is a 400 OperationOutcome that names the
parameter or element and the limit, on every backend.
"""
from __future__ import annotations

MAX_HOPS = 3                  # reference hops in one search parameter: chains and _has together
MAX_VALUES = 1000             # comma-separated (ORed) values of one search parameter
MAX_PARAMETERS = 100          # search parameters (each name=value) in one search
MAX_NUMBER_DIGITS = 32        # digits of one number, in a body or a search value
MAX_EXPONENT = 308            # |exponent| of a number: what an IEEE double holds (1e308)
MAX_URL_BYTES = 65_535        # path and query of a request (what the HTTP parser can address); POST takes more
