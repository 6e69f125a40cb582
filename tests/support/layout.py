"""Browser-test helpers for layout: page sizes, axe-core's findings, screenshots for the docs."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Page

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}
AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"
SCREENSHOTS = Path(__file__).parents[2] / "docs" / "screenshots"


def shoot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.wait_for_timeout(150)  # let the last frame paint
    # caret="initial": no style attribute injected to hide the caret (the page traps flag those).
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), caret="initial")


def serious_violations(page: Page) -> list[str]:
    """axe-core's serious and critical findings on the page as it is now."""
    return list(
        page.evaluate(
            """async () => {
                const result = await window.axe.run(document, { resultTypes: ["violations"] });
                return result.violations
                    .filter((v) => v.impact === "serious" || v.impact === "critical")
                    .map((v) => `${v.id}: ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`);
            }"""
        )
    )
