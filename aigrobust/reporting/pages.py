"""A report's pages: index.md and the self-contained index.html (figures inlined, Markdown rendered safely)."""

from __future__ import annotations

import re
from pathlib import Path

import jinja2
import pandas as pd
from markdown_it import MarkdownIt
from markupsafe import Markup

from aigrobust.evaluation.metrics import (
    efficiency_table,
    joint_table,
)
from aigrobust.reporting.figures import figure_caption
from aigrobust.reporting.tables import Report, to_markdown

NO_CHECKS = ("No check ran: the record checks compare accuracies under attacks on the label (none here), and the"
             " model probes run unless --no-probe is given.")


def _flag_lines(flags: pd.DataFrame) -> list[str]:
    icon = {"ok": "OK", "warn": "WARNING", "n/a": "n/a"}
    if flags.empty:  # say so, not an empty section
        return [NO_CHECKS]
    return [f"- **{icon.get(r.status, r.status)}** `{r.check}` ({r.model}): {r.sentence}" for r in flags.itertuples()]


def markdown_index(report: Report, table: pd.DataFrame, flags: pd.DataFrame) -> str:
    """index.md: the title, the preface, the threat model, the worst-case table, the checks, the figures and the
    tables, with links to the files beside it."""
    parts = [f"# {report.title}", ""]
    if report.preface:
        parts += [report.preface.strip(), ""]
    parts += [f"{note}" for note in report.notes] + [""]
    if not report.worst_case.empty:
        parts += ["## Headline", "", "Worst case over every attack and gate gradient, robust accuracy % [95% interval]; "
                  "FLOPs and unchanged gate patterns at the largest epsilon; '-': not run at that epsilon.", "",
                  to_markdown(report.worst_case), ""]
    if report.threat_model:
        parts += ["## Threat model", ""] + [f"- {line}" for line in report.threat_model] + [""]
    joint = joint_table(report.summary)
    if not joint.empty:
        parts += ["## Both goals", "", "An attacker chooses either goal: robust accuracy under the strongest "
                  "accuracy attack and executed FLOPs under the strongest compute attack, per model and epsilon.",
                  "", to_markdown(joint), ""]
    efficiency = efficiency_table(report.summary)
    if not efficiency.empty:
        parts += ["## Efficiency robustness", "", "Compute attacks and the random-noise control: executed FLOPs "
                  "adversarial over clean per image (mean, median, p95, max), the share of the compute the gates "
                  "save that the attack takes back (FLOPs-weighted, ILFO/GradAuto; block-counted, GradMDM) and the "
                  "share of images that already run every block.", "", to_markdown(efficiency), ""]
    parts += ["## Sanity checks (signs of gradient masking)", ""] + _flag_lines(flags) + [""]
    parts += ["## Results", "", "Columns: attack and its gate-gradient mode, defense and how the attacker treats it "
              "(oblivious / bpda / diff / eot), n samples, clean and robust accuracy with its 95% CI, share of "
              "samples whose gate pattern is unchanged, mean normalised Hamming distance of gate patterns, and "
              "executed FLOPs adversarial over clean.", "", to_markdown(table)]
    parts += ["## Figures", ""]
    for name in report.figures:
        parts += [f"![{name}](figures/{name}.png)", "", figure_caption(name), ""]
    parts += ["Tables: [summary.csv](summary.csv), [summary.md](summary.md), [summary.tex](summary.tex)"
              + (", [layer_rates.csv](layer_rates.csv)" if not report.layers.empty else "")
              + (", [class_rates.csv](class_rates.csv)" if not report.classes.empty else "") + ".", ""]
    return "\n".join(parts)


TEMPLATES = Path(__file__).resolve().parents[1] / "templates"


FOLD_ROWS = 30  # longer tables fold away in the HTML page


def _inline_svg(svg: bytes) -> str:
    """A matplotlib SVG file as an element for the page (its XML prolog and doctype dropped)."""
    text = svg.decode()
    return text[text.index("<svg"):]


def html_index(report: Report, table: pd.DataFrame, flags: pd.DataFrame) -> str:
    """The self-contained page, from templates/report.html with autoescaping; warnings first among the checks."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, keep_trailing_newline=True)
    ordered = sorted(flags.itertuples(), key=lambda r: r.status != "warn")
    return env.get_template("report.html").render(
        title=report.title,
        preface_html=Markup(markdown_to_html(report.preface)),  # noqa: S704  (markdown-it escapes raw HTML)
        notes=report.notes,
        flags=[{"css": r.status.replace("/", ""), "status": r.status, "check": r.check, "model": r.model,
                "sentence": r.sentence} for r in ordered],
        # inline SVG: the page's own check can find the bands and raster rows by their element ids
        figures=[{"name": name, "caption": figure_caption(name), "svg": Markup(_inline_svg(svg))}  # noqa: S704
                 for name, (_, svg) in report.figures.items()],
        worst_case={"columns": [str(c) for c in report.worst_case.columns],
                    "rows": [[str(v) for v in row] for row in report.worst_case.itertuples(index=False)]},
        threat_model=report.threat_model,
        no_checks=NO_CHECKS,
        table={"columns": [str(c) for c in table.columns], "rows": [[str(v) for v in row] for row in
                                                                     table.itertuples(index=False)],
               "folded": len(table) > FOLD_ROWS},
    )


_SAFE_LINK = re.compile(r"^(https?://|mailto:|[^:]*$)", re.IGNORECASE)  # http(s), mailto or a relative path


def markdown_to_html(markdown: str) -> str:
    """CommonMark (plus pipe tables) through markdown-it-py: raw HTML is escaped, links other than http(s), mailto
    and relative ones stay text, and headings move one level down (the page's own title is its only h1)."""
    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    md.validateLink = lambda url: bool(_SAFE_LINK.match(url.strip()))  # type: ignore[method-assign]
    tokens = md.parse(markdown)
    for token in tokens:
        if token.type in ("heading_open", "heading_close"):
            token.tag = f"h{min(int(token.tag[1]) + 1, 6)}"
    return md.renderer.render(tokens, md.options, {})
