"""Open a report's index.html in headless Chromium: screenshot it and print how many figures rendered.

Usage: python scripts/render_report.py reports/cifar10 [--png shot.png]
Exit 0 when every figure rendered and the screenshot is not blank, 1 otherwise, 2 without Chromium.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

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


def render(index: Path, screenshot: Path, width: int = 1280, height: int = 4000) -> tuple[str, float]:
    """(rendered-figures attribute 'n/m', share of non-white pixels in the screenshot)."""
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
    match = re.search(r'data-figures-rendered="(\d+/\d+)"', dom.stdout)
    with Image.open(screenshot) as image:
        pixels = np.asarray(image.convert("L"))
    return (match.group(1) if match else "0/?"), float((pixels < 245).mean())


@click.command()
@click.argument("report_dir", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--png", type=click.Path(path_type=Path), default=None, help="Where to keep the screenshot.")
def main(report_dir: Path, png: Path | None) -> None:
    """Render REPORT_DIR/index.html and check every figure shows."""
    target = png or Path(tempfile.mkdtemp()) / "report.png"
    try:
        rendered, ink = render(report_dir / "index.html", target)
    except FileNotFoundError as err:
        click.echo(str(err), err=True)
        sys.exit(2)
    done, total = rendered.split("/")
    ok = done == total and int(total) > 0 and ink > 0.02
    click.echo(f"figures rendered {rendered}; non-white pixels {100 * ink:.1f}%; screenshot {target}; "
               f"{'OK' if ok else 'FAILED'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
