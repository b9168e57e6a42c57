"""The clinician workspace at ``/helsepersonell/``: find a patient, state the purpose of
use, read the summary care record and keep its critical information (docs/workspace.md).

``workspace_door(platform, settings)`` builds the door (``web/doors``) with the pages of
``pages.py``; ``lookup.py`` and ``purpose.py`` check the forms, ``summary_view.py`` turns the
``$summary`` Bundle into what the page shows. All three are pure.
"""
from .pages import Workspace, workspace_door

__all__ = ["Workspace", "workspace_door"]
