"""The accessibility audit of a page: axe-core, evaluated in the page itself.

``axe.min.js`` (axe-core, MPL-2.0) comes from the ``axe-playwright-python`` dev dependency,
read from its installed files: nothing is fetched from a CDN. It is evaluated through
Playwright (the DevTools protocol), which the page's Content-Security-Policy does not
block, where an injected ``<script>`` would be. Call :func:`audit` on any page; the share
page and the next page are one more call each.
"""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files
from typing import Any

from playwright.sync_api import Page

#: The impacts that fail an audit (axe's are minor, moderate, serious and critical).
FAILING = ("serious", "critical")


@cache
def axe_source() -> str:
    return (files("axe_playwright_python") / "axe.min.js").read_text(encoding="utf-8")


def violations(page: Page, *, context: str = "document") -> list[dict[str, Any]]:
    """axe's violations on ``page`` as it is now (WCAG 2.x A and AA, and best practice)."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.evaluate(axe_source())
    result = page.evaluate(
        f"""async () => {{
            const result = await axe.run({context}, {{ resultTypes: ["violations"] }});
            return result.violations;
        }}"""
    )
    return list(result)


def describe(found: list[dict[str, Any]]) -> str:
    """One paragraph per violation: rule, impact, help, and the elements with their fix."""
    lines: list[str] = []
    for violation in found:
        lines.append(
            f"{violation['id']} ({violation['impact']}): {violation['help']} "
            f"[{violation['helpUrl']}]"
        )
        for node in violation["nodes"][:8]:
            lines.append(f"  at {json.dumps(node['target'])}: {node['html'][:160]}")
            summary = (node.get("failureSummary") or "").replace("\n", " ")
            if summary:
                lines.append(f"    {summary[:400]}")
    return "\n".join(lines)


def audit(page: Page, where: str) -> None:
    """Fails when axe finds a serious or critical violation on ``page``; ``where`` names it."""
    found = [v for v in violations(page) if v["impact"] in FAILING]
    assert not found, f"accessibility violations on {where}:\n{describe(found)}"
