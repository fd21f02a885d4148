"""Writing a report folder: summary.json, summary.md, per_image.csv and worst.png, each atomically."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from PIL import Image

from ..files import write_atomically


def markdown(summary: dict, title: str) -> str:
    keys = [k for k, v in summary.items() if isinstance(v, (int, float))]
    lines = [f"# {title}", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines.append("| " + " | ".join(_fmt(summary[k]) for k in keys) + " |")
    notes = [f"- {k}: {v}" for k, v in summary.items() if not isinstance(v, (int, float))]
    return "\n".join([*lines, "", *notes]) + "\n"


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def write_report(out: Path, title: str, summary: dict, rows: list[dict], sheet: Image.Image | None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_atomically(out / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())
    write_atomically(out / "summary.md", markdown(summary, title).encode())
    if rows:
        text = io.StringIO()
        columns = list(dict.fromkeys(key for row in rows for key in row))  # failed rows add "error"
        writer = csv.DictWriter(text, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
        write_atomically(out / "per_image.csv", text.getvalue().encode())
    if sheet is not None:
        buffer = io.BytesIO()
        sheet.save(buffer, "PNG")
        write_atomically(out / "worst.png", buffer.getvalue())
