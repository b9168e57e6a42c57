"""The doors' languages: bokmål (``nb``, the default) and English (``en``), with Babel.

The message ids are bokmål: a page is Norwegian first, and a string not yet translated
shows in bokmål rather than in a developer's English. The catalogs are
``web/locale/<lang>/LC_MESSAGES/messages.po``; they are read and compiled in memory when
the server starts (no ``.mo`` files to forget). ``docs/portal.md`` says how to extract new
strings (``pybabel extract -F src/enjournal/web/babel.cfg``) and update the catalogs.
"""
from __future__ import annotations

import gettext as _gettext
import io
from functools import lru_cache
from importlib import resources
from typing import Any, Callable

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations
from markupsafe import Markup

LANGUAGES = {"nb": "Norsk (bokmål)", "en": "English"}
DEFAULT = "nb"


def language(value: str | None) -> str:
    """``value`` if it is a language the doors speak, else the default (bokmål)."""
    value = (value or "").strip().lower()[:5]
    if value in ("no", "nb-no", "nob"):
        return "nb"
    return value if value in LANGUAGES else DEFAULT


@lru_cache(maxsize=None)
def translations(lang: str) -> _gettext.NullTranslations:
    """The compiled catalog of ``lang`` (a ``NullTranslations`` when there is none)."""
    lang = language(lang)
    path = resources.files("enjournal.web").joinpath("locale", lang, "LC_MESSAGES", "messages.po")
    if not path.is_file():
        return _gettext.NullTranslations()
    with path.open("rb") as fp:
        catalog = read_po(fp, locale=lang)
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return Translations(buffer)


def callables(lang: str) -> dict[str, Callable[..., Any]]:
    """``_``, ``gettext`` and ``ngettext`` for templates and code, in Jinja's "new style":
    ``_("Hei %(name)s", name=x)`` formats with escaping in templates (Markup) and plainly in
    Python code."""
    t = translations(lang)

    def gettext(message: str, **values: Any) -> str:
        text = t.gettext(message)
        return Markup(text) % values if values else text

    def ngettext(singular: str, plural: str, n: int, **values: Any) -> str:
        text = t.ngettext(singular, plural, n)
        values.setdefault("num", n)
        return Markup(text) % values

    return {"_": gettext, "gettext": gettext, "ngettext": ngettext}


def plain(lang: str) -> Callable[..., str]:
    """A gettext for Python code (messages in responses, not templates): plain strings."""
    t = translations(lang)

    def gettext(message: str, **values: Any) -> str:
        text = t.gettext(message)
        return text % values if values else text
    return gettext


def N_(message: str) -> str:
    """Marks ``message`` for extraction (``pybabel extract -k N_``) where it is defined;
    it is translated where it is shown (``_(label)`` in a template)."""
    return message
