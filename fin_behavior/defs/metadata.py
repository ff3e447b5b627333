"""Small builders of UI metadata shared by the stages."""

import base64
from pathlib import Path

import dagster as dg


def png_markdown(paths: list[Path]) -> dg.MetadataValue:
    """PNG plots inline in the materialization (the UI renders the markdown)."""
    images = (f"![{p.stem}](data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()})" for p in paths)
    return dg.MetadataValue.md("\n\n".join(images))
