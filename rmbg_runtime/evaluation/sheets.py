"""Contact sheets: one row per image, the panels side by side, scaled to one height."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

ROW_HEIGHT = 160
GAP = 4


def error_map(a: np.ndarray, b: np.ndarray) -> Image.Image:
    """|a - b| in red on black (uint8 masks of one size)."""
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16)).astype(np.uint8)
    return Image.merge(
        "RGB",
        [Image.fromarray(diff, "L"), Image.new("L", diff.shape[::-1]), Image.new("L", diff.shape[::-1])],
    )


def _thumb(panel: Image.Image) -> Image.Image:
    width = max(1, round(panel.width * ROW_HEIGHT / panel.height))
    return panel.convert("RGB").resize((width, ROW_HEIGHT), Image.Resampling.BILINEAR)


def contact_sheet(rows: list[tuple[str, list[Image.Image]]], titles: list[str]) -> Image.Image:
    """rows: (label, panels) with the panels in `titles` order."""
    thumbs = [(label, [_thumb(p) for p in panels]) for label, panels in rows]
    widths = [max(t[i].width for _, t in thumbs) for i in range(len(titles))] if thumbs else [ROW_HEIGHT]
    sheet = Image.new(
        "RGB", (sum(widths) + GAP * (len(widths) + 1), 20 + len(thumbs) * (ROW_HEIGHT + 20)), "white"
    )
    draw = ImageDraw.Draw(sheet)
    x = GAP
    for title, width in zip(titles, widths, strict=True):
        draw.text((x, 4), title, fill="black")
        x += width + GAP
    for row, (label, panels) in enumerate(thumbs):
        y = 20 + row * (ROW_HEIGHT + 20)
        draw.text((GAP, y + ROW_HEIGHT + 3), label, fill="black")
        x = GAP
        for panel, width in zip(panels, widths, strict=True):
            sheet.paste(panel, (x, y))
            x += width + GAP
    return sheet
