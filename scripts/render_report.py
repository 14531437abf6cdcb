"""Open a report's index.html in headless Chromium: screenshot it and read back what the browser drew.

Usage: python scripts/render_report.py reports/cifar10 [--png shot.png]
The page counts, after loading, the figures, the 95% bands of the accuracy figure and the rows of the gate raster
that have a non-empty box on screen. Exit 0 when every one of them was drawn (and there is at least one figure and
one band) and the screenshot is not blank, 1 otherwise, 2 without Chromium.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

import click

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def find_chromium() -> str | None:
    """Path of a Chromium binary, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Rendered(NamedTuple):
    """What Chromium drew, each as 'drawn/present' (as the page's script read it back), and the screenshot's ink."""

    figures: str
    bands: str
    raster_rows: str
    ink: float

    def ok(self) -> bool:
        """Every figure, band and raster row drawn; a figure and a band at least; the screenshot not blank."""
        counts = [tuple(map(int, c.split("/"))) for c in (self.figures, self.bands, self.raster_rows)]
        return all(d == t for d, t in counts) and counts[0][1] > 0 and counts[1][1] > 0 and self.ink > 0.02


def _read_back(dom: str, attribute: str) -> str:
    match = re.search(rf'{attribute}="(\d+/\d+)"', dom)
    return match.group(1) if match else "0/0"


def render(index: Path, screenshot: Path, width: int = 1280, height: int = 4000) -> Rendered:
    """Load ``index`` in headless Chromium; what it drew and the share of non-white pixels in the screenshot."""
    import numpy as np
    from PIL import Image

    binary = find_chromium()
    if binary is None:
        raise FileNotFoundError("chromium not found (Debian: apt-get install chromium)")
    url = index.resolve().as_uri()
    with tempfile.TemporaryDirectory() as profile:
        common = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=5000"]
        dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=False)
        subprocess.run([*common, f"--window-size={width},{height}", f"--screenshot={screenshot}", url],
                       capture_output=True, timeout=120, check=False)
    with Image.open(screenshot) as image:
        pixels = np.asarray(image.convert("L"))
    figures = _read_back(dom.stdout, "data-figures-rendered")
    return Rendered(figures if figures != "0/0" else "0/1", _read_back(dom.stdout, "data-bands-drawn"),
                    _read_back(dom.stdout, "data-raster-rows-drawn"), float((pixels < 245).mean()))


@click.command()
@click.argument("report_dir", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--png", type=click.Path(path_type=Path), default=None, help="Where to keep the screenshot.")
def main(report_dir: Path, png: Path | None) -> None:
    """Render REPORT_DIR/index.html and check every figure shows."""
    target = png or Path(tempfile.mkdtemp()) / "report.png"
    try:
        drawn = render(report_dir / "index.html", target)
    except FileNotFoundError as err:
        click.echo(str(err), err=True)
        sys.exit(2)
    click.echo(f"figures drawn {drawn.figures}; 95% bands {drawn.bands}; gate-raster rows {drawn.raster_rows}; "
               f"non-white pixels {100 * drawn.ink:.1f}%; screenshot {target}; {'OK' if drawn.ok() else 'FAILED'}")
    sys.exit(0 if drawn.ok() else 1)


if __name__ == "__main__":
    main()
