"""Bench-only ASGI factory for the audit benchmark (``bench/audit.py``): the application as
served (``enjournal.app.build_asgi`` with settings from ``ENJOURNAL_*``, exactly what
``enjournal serve`` runs in each worker), and with ``BENCH_AUDIT=off`` the same application
with its authentication middleware's ``audit`` set to None, so no request is audited.

That switch exists only here, to measure what auditing costs; the product has no setting
that turns the audit log off.

    BENCH_AUDIT=off ENJOURNAL_DATABASE=sqlite:///... uvicorn bench.audit_app:create --factory --workers 2
"""
from __future__ import annotations

import os
from typing import Any


def create() -> Any:
    from enjournal.app import build_asgi
    from enjournal.settings import load
    from enjournal.web.auth import Authenticate

    app = build_asgi(load())
    mode = os.environ.get("BENCH_AUDIT", "on")
    if mode == "off":
        if not isinstance(app, Authenticate) or not hasattr(app, "audit"):
            raise SystemExit("bench.audit_app: build_asgi no longer returns the Authenticate middleware")
        app.audit = None
    elif mode != "on":
        raise SystemExit(f"BENCH_AUDIT must be on or off, not {mode!r}")
    return app
