"""The landing page `/` in a real browser: accessible, and it leads to the two doors."""
from __future__ import annotations


def test_landing_page_passes_axe(page, axe_check):
    page.goto("/")
    assert page.title()
    axe_check(page, "the landing page")


def test_landing_page_passes_axe_on_a_phone(phone_page, axe_check):
    phone_page.goto("/")
    width = phone_page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 390, f"the landing page is {width} px wide on a 390 px screen"
    axe_check(phone_page, "the landing page (phone)")


def test_landing_page_without_javascript(js_disabled_page, axe_check):
    """The page needs no JavaScript; axe checks a copy of the document as served."""
    js_disabled_page.goto("/")
    assert js_disabled_page.get_by_role("link", name="Innbygger").is_visible()
    assert js_disabled_page.get_by_role("link", name="Helsepersonell").is_visible()
    axe_check(js_disabled_page, "the landing page (JavaScript off)")
