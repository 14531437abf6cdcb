"""Reports, sanity checks and CI baselines: files, rendering, a planted regression, a planted masking model."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from aigrobust.checks.probes import model_probes
from aigrobust.cli import cli
from aigrobust.evaluation import EvalSpec, ModelEntry
from aigrobust.evaluation.metrics import wilson_interval
from aigrobust.models.checkpoints import save_checkpoint
from aigrobust.models.factory import load_checkpoint
from aigrobust.reporting.sanity import record_checks
from tests.conftest import PRETRAINED, PROJECT_ROOT, SHARED_DATA, require

sys.path.insert(0, str(PROJECT_ROOT / "scripts"))


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def our_resnet20(tmp_path_factory) -> Path:
    """The external pretrained resnet20, converted into our checkpoint format in a temporary folder."""
    model, _ = load_checkpoint(require(PRETRAINED / "resnet20-12fca82f.th"))
    path = tmp_path_factory.mktemp("ckpt") / "resnet20.safetensors"
    save_checkpoint(model, path, dataset="cifar10", source="akamaster resnet20-12fca82f.th")
    return path


@pytest.fixture(scope="module")
def gated_checkpoint(tmp_path_factory) -> Path:
    from aigrobust import create_model
    from tests.conftest import half_closed

    path = tmp_path_factory.mktemp("ckpt") / "tiny_aig.safetensors"
    save_checkpoint(half_closed(create_model("tiny_aig")), path)
    return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, our_resnet20: Path, gated_checkpoint: Path) -> Path:
    out = tmp_path_factory.mktemp("runs") / "run"
    code, output = invoke("attack", "--checkpoint", str(our_resnet20), "--checkpoint", f"tiny={gated_checkpoint}",
                          "--eps", "2/255", "--eps", "8/255", "--attack", "fgsm", "--attack", "pgd:steps=3",
                          "--gate-grad", "all", "--defense", "jpeg:75", "--defense-grad", "bpda",
                          "--data-dir", str(SHARED_DATA), "--n-samples", "48", "--batch-size", "48",
                          "--out", str(out))
    assert code == 0, output
    return out


def test_report_writes_tables_figures_and_indexes(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    code, output = invoke("report", str(run_dir), "--out", str(out), "--n-probe", "16", "--title", "Test report")
    assert code == 0, output
    for name in ("index.md", "index.html", "summary.csv", "summary.md", "summary.tex", "layer_rates.csv",
                 "class_rates.csv", "sanity_checks.csv", "provenance.json"):
        assert (out / name).is_file(), name
    figures = sorted(p.name for p in (out / "figures").iterdir())
    for stem in ("accuracy_vs_epsilon", "layer_execution_rates", "gate_flip_heatmap", "class_execution_rates",
                 "gate_raster"):
        assert f"{stem}.png" in figures and f"{stem}.svg" in figures
    assert "flops_clean_vs_adversarial.png" not in figures  # no compute attack ran: no FLOPs distribution
    md = (out / "index.md").read_text()
    assert "95%" in md and "Sanity checks" in md and "![accuracy_vs_epsilon](figures/accuracy_vs_epsilon.png)" in md
    assert "jpeg:75" in md and "bpda" in md and "worst-case" in md and "straight-through" in md
    html_text = (out / "index.html").read_text()
    # self-contained: every figure inline as SVG, nothing read from figures/
    assert html_text.count("<figure id=") == len(figures) // 2 and "figures/" not in html_text
    assert 'id="gate-raster-' in html_text and 'id="band-' in html_text
    tex = (out / "summary.tex").read_text()
    assert r"\begin{tabular}" in tex and r"\%" in tex
    # the table's numbers are the records' aggregates
    summary = json.loads((run_dir / "summary.json").read_text())["summary"]
    row = next(r for r in summary if r["model"] == "resnet20" and r["attack_label"] == "FGSM" and r["epsilon"] == 0)
    assert f"{100 * row['clean_acc']:.1f}" in md


def test_report_renders_every_figure_in_headless_chromium(run_dir: Path, tmp_path: Path) -> None:
    from render_report import find_chromium, render

    if find_chromium() is None:
        pytest.skip("chromium is not installed (Debian package 'chromium'; .ci/run installs it)")
    out = tmp_path / "report"
    assert invoke("report", str(run_dir), "--out", str(out), "--no-probe")[0] == 0
    drawn = render(out / "index.html", tmp_path / "shot.png")
    figures_in_page = len(list((out / "figures").glob("*.png")))
    assert figures_in_page > 0 and drawn.figures == f"{figures_in_page}/{figures_in_page}"
    bands, present = map(int, drawn.bands.split("/"))
    assert bands == present > 0  # every 95% band the accuracy figure holds was drawn
    rows, present = map(int, drawn.raster_rows.split("/"))
    assert rows == present == 6  # the gate raster's rows: six sample images
    assert drawn.ok() and drawn.ink > 0.02  # not blank


def test_gate_raster_picks_changed_patterns_first_and_shows_the_images(run_dir: Path) -> None:
    from aigrobust.reporting.gate_plots import gate_raster_rows
    from aigrobust.reporting.report import images_from_runs
    from aigrobust.runs.folder import FinishedRun

    run = FinishedRun.open(run_dir)
    records = run.records()
    rows = gate_raster_rows(records, 8 / 255)
    assert len(rows) == 6 and set(rows["model"]) == {"tiny"} and set(rows["gate_grad"]) == {"exact"}
    flips = [sum(a != b for a, b in zip(c, d)) for c, d in zip(rows["clean_gates"], rows["adv_gates"])]
    changed = [f for f in flips if f > 0]
    assert flips[:len(changed)] == sorted(changed, reverse=True)  # most-changed first
    images = images_from_runs([run], [int(i) for i in rows["sample"]])
    assert sorted(images) == sorted(int(i) for i in rows["sample"])
    data = run.data()
    first = int(rows["sample"].iloc[0])
    assert (images[first] == data.images[list(data.indices).index(first)]).all()  # the very test image


def test_wilson_interval_matches_the_two_point_rule() -> None:
    lo, hi = wilson_interval(500, 1000)
    assert hi - lo == pytest.approx(2 * 0.031, abs=0.002)  # 1000 samples: about +-3 points at 50%, +-2 at 90%
    lo, hi = wilson_interval(900, 1000)
    assert (hi - lo) / 2 == pytest.approx(0.0186, abs=0.002)


def test_baseline_check_passes_then_catches_a_planted_regression(run_dir: Path, our_resnet20: Path,
                                                                 tmp_path: Path) -> None:
    # a baseline from a run on a checkpoint we then degrade in place
    checkpoint = tmp_path / "model.safetensors"
    checkpoint.write_bytes(our_resnet20.read_bytes())
    run = tmp_path / "run"
    code, output = invoke("attack", "--checkpoint", str(checkpoint), "--eps", "2/255", "--attack", "fgsm",
                          "--data-dir", str(SHARED_DATA), "--n-samples", "64", "--out", str(run))
    assert code == 0, output
    baseline = tmp_path / "ci" / "baseline.json"
    code, output = invoke("check", "--baseline", str(baseline), "--init-from", str(run))
    assert code == 0, output
    code, output = invoke("check", "--baseline", str(baseline), "--init-from", str(run))
    assert code == 2 and "add --update to replace it" in output, output  # an existing baseline is never overwritten
    code, output = invoke("check", "--baseline", str(baseline), "--init-from", str(run), "--update")
    assert code == 0 and "baseline written" in output, output
    document = json.loads(baseline.read_text())
    assert document["spec"]["models"]["resnet20"]["sha256"] and len(document["spec"]["sample_indices"]) == 64
    assert not Path(document["spec"]["models"]["resnet20"]["checkpoint"]).is_absolute()
    roots = ("--allow-root", str(tmp_path), "--allow-root", str(SHARED_DATA))  # the model and data lie outside ci/
    code, output = invoke("check", "--baseline", str(baseline))
    assert code == 2 and "outside the baseline's folder" in output, output  # refused before anything is opened
    code, output = invoke("check", "--baseline", str(baseline), *roots)
    assert code == 0, output
    assert "REGRESSION" not in output
    model, _ = load_checkpoint(checkpoint)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("conv1.weight") and "layer" in name:
                p.add_(torch.randn_like(p) * p.std() * 1.5, alpha=1.0)
    save_checkpoint(model, checkpoint)
    code, output = invoke("check", "--baseline", str(baseline), *roots)
    assert code == 1, output
    assert re.search(r"robust_acc .* REGRESSION", output)
    assert "changed since the baseline" in output


def test_a_baseline_attack_on_its_first_samples_keeps_their_records(tmp_path: Path) -> None:
    from aigrobust.checks.baseline import evaluate_spec

    require(SHARED_DATA / "cifar10_test_sample.npz")
    shipped = json.loads((PROJECT_ROOT / "reports" / "ci" / "baseline.json").read_text())
    spec = {**shipped["spec"], "models": {"aig20": shipped["spec"]["models"]["aig20"]}, "data_sha256": None,
            "sample_indices": shipped["spec"]["sample_indices"][:6], "attacks": ["fgsm", "compute-inflation:steps=2"],
            "epsilons": [8 / 255], "defenses": ["none"], "gate_grads": ["exact"]}
    base = PROJECT_ROOT / "reports" / "ci"
    every = evaluate_spec(spec, base)
    first = evaluate_spec({**spec, "attack_samples": {"compute-inflation:steps=2": 3}}, base)
    keys = ["model", "defense", "defense_grad", "attack", "gate_grad", "epsilon", "sample"]
    computed = first["attack"].str.startswith("compute-inflation")
    assert sorted(first.loc[computed, "sample"].unique()) == sorted(spec["sample_indices"][:3])
    assert first.loc[~computed, "sample"].nunique() == 6
    expected = every.merge(first[keys], on=keys).sort_values(keys, ignore_index=True)
    assert len(expected) == len(first)  # the same rows, value for value, as the run on every sample
    pd.testing.assert_frame_equal(first.sort_values(keys, ignore_index=True)[expected.columns], expected,
                                  check_dtype=False)
    for samples, wording in (({"pgd": 3}, "not one of the spec's attacks"), ({"fgsm": 0}, "from 1 to 200"),
                             ({"fgsm": 201}, "from 1 to 200"), ([3], "must be an object")):
        bad = tmp_path / "baseline.json"
        bad.write_text(json.dumps({**shipped, "spec": {**shipped["spec"], "attacks": ["fgsm"],
                                                        "attack_samples": samples}}))
        code, output = invoke("check", "--baseline", str(bad))
        assert code == 2 and wording in output and len(output.strip().splitlines()) == 1, output


def test_malformed_baselines_are_usage_errors(tmp_path: Path) -> None:
    bad = tmp_path / "baseline.json"
    bad.write_text("{not json")
    code, output = invoke("check", "--baseline", str(bad))
    assert code == 2 and "not valid JSON" in output and "Traceback" not in output
    bad.write_text(json.dumps({"format": "something-else"}))
    code, output = invoke("check", "--baseline", str(bad))
    assert code == 2 and "not an aigrobust baseline" in output
    code, output = invoke("check", "--baseline", str(tmp_path / "absent.json"))
    assert code == 2 and "not found" in output


class InputQuantizer(torch.nn.Module):
    """A planted masking model: quantises its input (round has no usable gradient), then classifies."""

    def __init__(self, model: torch.nn.Module, levels: int = 8) -> None:
        super().__init__()
        self.model = model
        self.levels = levels
        self.num_classes = 10

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(torch.round(x * self.levels) / self.levels)


def test_sanity_checks_flag_a_planted_masking_model_and_not_a_clean_one(cifar_test) -> None:
    clean_model, _ = load_checkpoint(require(PRETRAINED / "resnet20-12fca82f.th"))
    masked = InputQuantizer(clean_model).eval()
    data = cifar_test.subset(range(64))
    x, y = data.tensors()
    spec = EvalSpec(attacks=("fgsm", "pgd:steps=5", "square:n_queries=150"), epsilons=(8 / 255,))

    def flags_for(model: torch.nn.Module, name: str) -> dict[str, str]:
        entry = ModelEntry(name, model)  # type: ignore[arg-type]
        records = _records_for_plain(entry, spec, x, y, data.indices)
        flags = record_checks(records) + model_probes(name, model, x[:32], y[:32], 10, pgd_steps=5)
        sentences[name] = {f.check: f.sentence for f in flags}
        return {f.check: f.status for f in flags}

    sentences: dict[str, dict[str, str]] = {}

    clean_flags = flags_for(clean_model, "clean")
    masked_flags = flags_for(masked, "masked")
    assert all(status in ("ok", "n/a") for status in clean_flags.values()), clean_flags
    assert masked_flags["zero-gradients"] == "warn"
    assert masked_flags["large-epsilon"] == "warn"
    assert masked_flags["blackbox-not-better"] == "warn"
    assert "(undefended at eps 8/255)" in sentences["masked"]["blackbox-not-better"]  # names the setting in words


def _records_for_plain(entry: ModelEntry, spec: EvalSpec, x: torch.Tensor, y: torch.Tensor, ids):  # type: ignore[no-untyped-def]
    """Records for a plain callable model (the planted one has no gates): wrap it like a plain ResNet."""
    from aigrobust.evaluation import evaluate_batch
    from attacks import attack_from_spec

    model = entry.model
    if not hasattr(model, "forward_with_gates"):
        model = _PlainAdapter(model)
    attacks = [attack_from_spec(s) for s in spec.attacks]
    return evaluate_batch(ModelEntry(entry.name, model), spec, attacks, x, y, list(ids))


class _PlainAdapter(torch.nn.Module):
    """Gives any classifier the duck-typed gate interface of a plain ResNet (no gates)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.is_gated = False
        self.num_classes = 10
        self.gate_mode = "hard"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def forward_with_gates(self, x: torch.Tensor):  # type: ignore[no-untyped-def]
        from aigrobust.models.gates import GateTrace

        logits = self.model(x)
        n = x.shape[0]
        empty = torch.zeros(n, 0)
        return logits, GateTrace(empty.bool(), empty, empty, torch.ones(n, dtype=torch.float64))

    def set_gate_mode(self, mode, seed=None) -> None:  # type: ignore[no-untyped-def]
        self.gate_mode = mode

    def flop_profile(self, shape):  # type: ignore[no-untyped-def]
        raise NotImplementedError


def test_report_counts_a_sample_once_across_runs_and_carries_a_preface(run_dir: Path, tmp_path: Path) -> None:
    import pandas as pd

    preface = tmp_path / "findings.md"
    preface.write_text("## Findings\n\n- **Q1**: gates run at `0.70`.\n\n| model | acc |\n| --- | --- |\n| aig20 | 88.0 |\n")
    out = tmp_path / "report"
    # the same run twice: the second copy's rows are repeats and must not double any n
    code, output = invoke("report", str(run_dir), str(run_dir), "--out", str(out), "--no-probe",
                          "--preface", str(preface))
    assert code == 0, output
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary["n"]) == {48}
    md = (out / "index.md").read_text()
    assert md.index("## Findings") < md.index("## Results") and "| aig20 | 88.0 |" in md
    page = (out / "index.html").read_text()
    assert "<strong>Q1</strong>" in page and "<td>88.0</td>" in page
    # every report states its threat model and each attack's budget, and leads with the compact worst-case table
    assert md.index("## Headline") < md.index("## Threat model") < md.index("## Sanity checks")
    assert "epsilons 0, " in md and "steps=" in md and "n = 48 samples per setting" in md
    assert "<h2>Threat model</h2>" in page and "<h2>Headline</h2>" in page
    code, output = invoke("report", str(run_dir), "--out", str(tmp_path / "r2"), "--no-probe",
                          "--preface", str(tmp_path / "missing.md"))
    assert code != 0 and "missing.md" in output


def test_study_findings_answer_from_the_records(run_dir: Path) -> None:
    import pandas as pd
    from study_findings import Findings

    from aigrobust.runs.folder import read_records

    records = read_records(run_dir)
    text = Findings(records, gated="tiny", plain="resnet20", arch="tiny_aig").markdown()
    for heading in ("### 1.", "### 2.", "### 3.", "### 4.", "### Caveats"):
        assert heading in text
    summary = pd.read_csv(run_dir / "summary.csv")
    clean = summary[(summary["model"] == "resnet20") & (summary["attack_label"] == "FGSM") & (summary["epsilon"] == 0)
                    & (summary["defense"] == "none")]["clean_acc"].iloc[0]
    assert f"resnet20 {100 * clean:.1f}%" in text  # the answer's number is the records' number
    assert "n/a" not in text.split("### 2.")[1].split("### 3.")[0]  # every FGSM cell was found


def test_markdown_through_markdown_it_with_safe_links_and_escaped_html() -> None:
    from aigrobust.reporting.pages import markdown_to_html
    from aigrobust.reporting.tables import latex_escape

    page = markdown_to_html("# Title\n\n1. one\n2. two\n\n- a\n  - nested\n\n```\nx <b>\n```\n\n*em* and **strong** "
                            "[bad](javascript:alert(1)) [web](https://example.org) [rel](docs/a.md) "
                            "[mail](mailto:a@b.c) <script>alert(1)</script>\n")
    assert "<h2>Title</h2>" in page and "<ol>" in page and "<ul>\n<li>nested</li>" in page
    assert "<pre><code>x &lt;b&gt;\n</code></pre>" in page and "<em>em</em>" in page and "<strong>strong</strong>" in page
    assert "javascript:" not in page.replace("[bad](javascript:alert(1))", "")  # stays text, never an href
    assert 'href="https://example.org"' in page and 'href="docs/a.md"' in page and 'href="mailto:a@b.c"' in page
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert latex_escape("a\\b^c~d_e&{x}%$#") == (r"a\textbackslash{}b\textasciicircum{}c\textasciitilde{}d\_e\&\{x\}"
                                                  r"\%\$\#")


def test_html_page_lists_warnings_first_and_folds_long_tables() -> None:
    import pandas as pd

    from aigrobust.reporting.pages import html_index
    from aigrobust.reporting.tables import Report

    empty = pd.DataFrame()
    report = Report(title="t <b>", summary=empty, layers=empty, classes=empty, flags=[], notes=["a < b"])
    flags = pd.DataFrame([{"check": "c1", "model": "m", "status": "ok", "sentence": "fine"},
                          {"check": "c2", "model": "m", "status": "warn", "sentence": "masked?"}])
    long = pd.DataFrame({"x": range(31)})
    page = html_index(report, long, flags)
    assert page.index("masked?") < page.index("fine")  # warnings first
    assert "<details><summary>31 rows" in page and "t &lt;b&gt;" in page and "a &lt; b" in page  # autoescaped
    assert "<details>" not in html_index(report, long.head(30), flags)


def test_gate_figures_use_the_epsilon_where_gate_attacks_ran() -> None:
    import pandas as pd

    from aigrobust.reporting.gate_plots import gate_figure_epsilon

    def rows(attack: str, goal: str, epsilons: list[float]) -> pd.DataFrame:
        return pd.DataFrame({"attack": attack, "goal": goal, "epsilon": epsilons})

    fgsm_sweep = rows("fgsm", "misclassify", [0.0, 2 / 255, 8 / 255, 16 / 255])
    pgd = rows("pgd", "misclassify", [0.0, 2 / 255, 8 / 255])
    assert gate_figure_epsilon(pd.concat([fgsm_sweep, pgd])) == pytest.approx(8 / 255)  # not 16/255: FGSM alone there
    flip = rows("gate-flip", "gates", [0.0, 2 / 255])
    assert gate_figure_epsilon(pd.concat([fgsm_sweep, pgd, flip])) == pytest.approx(2 / 255)


def test_study_findings_read_the_standard_protocol_apart_from_the_classic_chain(run_dir: Path) -> None:
    """Standard-suite attacks get their own columns (never mistaken for the classic chain's APGD or Square), and the
    classic chain's worst case is computed without them."""
    import pandas as pd
    from study_findings import STANDARD, Findings

    from aigrobust.evaluation.metrics import summarize
    from aigrobust.runs.folder import read_records
    from attacks import SUITES, attack_from_spec

    records = read_records(run_dir)
    fgsm = records[records["attack"] == attack_from_spec("fgsm").spec]
    apgd_spec = attack_from_spec(SUITES["standard"][0]).spec
    assert apgd_spec in STANDARD
    # stands in for a standard-suite run that fools every image at every epsilon > 0
    attacked = fgsm["epsilon"] > 0
    as_standard = fgsm.assign(attack=apgd_spec,
                              adv_pred=fgsm["adv_pred"].where(~attacked, (fgsm["label"] + 1) % 10),
                              adv_correct=fgsm["adv_correct"] & ~attacked, success=fgsm["success"] | attacked)
    findings = Findings(pd.concat([records, as_standard], ignore_index=True), gated="tiny", plain="resnet20",
                        arch="tiny_aig")
    text = findings.markdown()
    section = text.split("### 3b.")[1].split("### 4.")[0]
    assert "APGD-CE-100" in section and "classic chain" in section
    classic = summarize(records)
    rows = classic[(classic["model"] == "resnet20") & (classic["attack"] == "worst-case")
                   & (classic["defense"] == "none") & (classic["epsilon"].round(6) == round(2 / 255, 6))]
    worst = float(rows["robust_acc"].iloc[0])
    assert worst > 0  # else the columns below could not tell the two worst cases apart
    line = next(text_row for text_row in section.splitlines() if text_row.startswith("| resnet20 | 2/255"))
    cells = [cell.strip(" |") for cell in line.split(" | ")]
    assert cells[2] == "0.0" and cells[-1] == "0.0"  # the suite, and every attack, fool all
    assert cells[-2] == f"{100 * worst:.1f}"  # the classic chain's worst case: the standard rows left out


def test_study_findings_put_the_standard_protocol_against_jpeg_beside_the_classic_chain(run_dir: Path) -> None:
    """A standard-suite run against JPEG gets its own section and counts in the adaptive JPEG worst case; the
    headline says which models it covers."""
    import pandas as pd
    from study_findings import Findings

    from aigrobust.evaluation.metrics import summarize
    from aigrobust.runs.folder import read_records
    from attacks import SUITES, attack_from_spec

    records = read_records(run_dir)
    jpeg_fgsm = records[(records["attack"] == attack_from_spec("fgsm").spec) & (records["defense"] == "jpeg:75")
                        & (records["model"] == "resnet20")]  # the gated model has not run it yet
    attacked = jpeg_fgsm["epsilon"] > 0
    # stands in for a standard-suite run under BPDA that fools every image at every epsilon > 0
    as_standard = jpeg_fgsm.assign(attack=attack_from_spec(SUITES["standard"][0]).spec,
                                   adv_pred=jpeg_fgsm["adv_pred"].where(~attacked, (jpeg_fgsm["label"] + 1) % 10),
                                   adv_correct=jpeg_fgsm["adv_correct"] & ~attacked,
                                   success=jpeg_fgsm["success"] | attacked)
    before = Findings(records, gated="tiny", plain="resnet20", arch="tiny_aig").markdown()
    assert "### 3c." not in before and "JPEG-75 worst cases rest on the classic chain" in before
    text = Findings(pd.concat([records, as_standard], ignore_index=True), gated="tiny", plain="resnet20",
                    arch="tiny_aig").markdown()
    assert "adaptive JPEG-75 worst cases include it for resnet20, not yet for tiny (†" in text
    section = text.split("### 3c.")[1].split("### 4.")[0]
    classic = summarize(records)
    rows = classic[(classic["model"] == "resnet20") & (classic["attack"] == "worst-case")
                   & (classic["defense"] == "jpeg:75") & (classic["defense_grad"] == "bpda")  # the only one run
                   & (classic["epsilon"].round(6) == round(2 / 255, 6))]
    worst = float(rows["robust_acc"].iloc[0])
    assert worst > 0  # else the columns could not tell the classic chain from every attack
    line = next(row for row in section.splitlines() if row.startswith("| resnet20 | jpeg:75 | 2/255"))
    cells = [cell.strip(" |") for cell in line.split(" | ")]
    assert cells[3] == "0.0" and cells[4] == "n/a"  # BPDA ran, diff did not
    assert cells[5] == f"{100 * worst:.1f}" and cells[6] == "0.0"
    headline = text.split("### Headline")[1].split("### 1.")[0]
    resnet_row = next(row for row in headline.splitlines() if row.startswith("| resnet20 |"))
    assert resnet_row.split(" | ")[7] == "0.0"  # the adaptive JPEG-75 column counts the standard protocol
    tiny_row = next(row for row in headline.splitlines() if row.startswith("| tiny |"))
    assert " †" not in resnet_row and tiny_row.split(" | ")[7].endswith(" †")  # tiny's rests on the classic chain


def test_study_findings_read_the_recipe_control_from_its_numbers(run_dir: Path) -> None:
    """The recipe control's table puts the shipped 30 epochs among the other lengths, in order, and its reading
    follows the numbers, not a fixed sentence."""
    from study_findings import Findings

    from aigrobust.runs.folder import read_records

    def arm(robust: float, epochs: int = 10, weight_decay: float = 5e-4) -> dict:
        return {"apgd_robust_2_255": robust, "recipe": {"epochs": epochs, "weight_decay": weight_decay},
                "margins": {"clean_acc": 0.85, "margin_correct": 6.0, "logit_norm": 13.0, "grad_l1_correct": 1000.0,
                            "first_order_robust_share": 0.3}}

    margins = {name: arm(0)["margins"] for name in ("resnet20 (ours)", "akamaster-resnet20")}
    tune = {"epochs": 1, "lr": 0.01, "apgd_robust_2_255_before": 0.002, "apgd_robust_2_255_after": 0.084,
            "margins_after": margins["akamaster-resnet20"],
            "ours_apgd_robust_2_255": {"resnet20 (ours)": 0.238, "aig20 (ours)": 0.24}}
    records = read_records(run_dir)
    cases = (({"10": arm(0.25), "5": arm(0.26, 5), "10-wd0.0001": arm(0.02, 10, 1e-4)},
              ["is not what keeps them robust", "from 25.0% to 2.0% (-23.0 points): a cause of the gap"]),
             ({"10": arm(0.40)}, ["is a cause beside"]))
    for arms, words in cases:
        why = {"margins": margins, "jpeg_fine_tune": tune, "recipe_epochs": arms}
        text = Findings(records, gated="tiny", plain="resnet20", arch="tiny_aig", gap_factors=why).markdown()
        section = text.split("The recipe:")[1]
        rows = [row.split(" | ") for row in section.splitlines() if row.startswith("| ")][2:]
        shipped_decay = [int(row[0].strip("| ").split()[0]) for row in rows if row[1] == "0.0005"]
        assert shipped_decay == sorted(shipped_decay) and any("30 (shipped)" in row[0] for row in rows)
        assert all(word in section for word in words) and "Not run: our recipe" not in text


def test_report_refuses_runs_that_give_one_name_to_two_networks_or_image_sets(
        run_dir: Path, gated_checkpoint: Path, synthetic_npz_dir: Path, tmp_path: Path) -> None:
    """Joined runs merge rows by model label and sample id: a label naming another network, a sample id naming
    another image, or a gated model under another gate mode would mix into one figure without a word."""
    from aigrobust import create_model
    from aigrobust.runs.folder import FinishedRun
    from aigrobust.runs.records import combine_runs

    untrained = tmp_path / "untrained.safetensors"
    save_checkpoint(create_model("resnet20"), untrained, dataset="cifar10")  # a resnet20, not the one trained here
    second_runs = {
        "two networks under one name": ["--checkpoint", f"resnet20={untrained}", "--data-dir", str(SHARED_DATA)],
        "other labels": ["--checkpoint", f"tiny={gated_checkpoint}", "--data-dir", str(synthetic_npz_dir)],
        "hard gates in .* and stochastic gates in": ["--checkpoint", f"tiny={gated_checkpoint}", "--data-dir",
                                                     str(SHARED_DATA), "--gate-mode", "stochastic"],
        "same network, fewer images": ["--checkpoint", f"tiny={gated_checkpoint}", "--data-dir", str(SHARED_DATA)],
    }
    for expected, args in second_runs.items():
        second = tmp_path / expected.split()[0]
        code, output = invoke("attack", *args, "--eps", "2/255", "--n-samples", "16", "--out", str(second))
        assert code == 0, output
        if expected.startswith("same"):  # the same network on a subset of the images joins (the first run wins)
            records, dropped = combine_runs([FinishedRun.open(run_dir), FinishedRun.open(second)])
            assert dropped > 0 and len(records) == len(FinishedRun.open(run_dir).records())
            continue
        report = tmp_path / f"report-{expected.split()[0]}"
        code, output = invoke("report", str(run_dir), str(second), "--out", str(report), "--no-probe")
        assert code != 0 and re.search(expected, output), output
        assert len(output.strip().splitlines()) == 1 and not report.exists()


def test_a_run_of_gate_attacks_alone_prints_their_table_and_reports(gated_checkpoint: Path, synthetic_npz_dir: Path,
                                                                    tmp_path: Path) -> None:
    """Gate attacks aim at no misclassification, so a run of them alone has no robust-accuracy row: the command
    printed its records, then failed on the empty accuracy table (and the report likewise)."""
    run = tmp_path / "gates"
    code, output = invoke("attack", "--checkpoint", f"tiny={gated_checkpoint}", "--attack", "gate-flip:steps=2",
                          "--attack", "compute-inflation:steps=2", "--eps", "8/255", "--data-dir", str(synthetic_npz_dir),
                          "--n-samples", "12", "--out", str(run))
    assert code == 0, output
    assert "gate attacks: goal met % (executed FLOPs adversarial / clean)" in output
    rows = [line.split() for line in output.splitlines() if line.startswith("tiny ")]
    assert sorted(r[2] for r in rows) == ["compute-inflation-2", "gate-flip-2"]
    summary = json.loads((run / "summary.json").read_text())["summary"]
    flip = next(r for r in summary if r["attack_label"] == "gate-flip-2" and r["epsilon"] > 0)
    flip_row = next(r for r in rows if r[2] == "gate-flip-2")
    assert flip_row[-2:] == [f"{100 * flip['goal_success_rate']:.1f}", f"({flip['flops_ratio']:.3f})"]
    code, output = invoke("report", str(run), "--out", str(tmp_path / "report"), "--no-probe")
    assert code == 0, output
    assert not (tmp_path / "report" / "figures" / "accuracy_vs_epsilon.png").exists()
    # no probe and no accuracy attack: the sanity section says that nothing was checked, not nothing
    for page in ("index.md", "index.html"):
        assert "No check ran" in (tmp_path / "report" / page).read_text()
    page = (tmp_path / "report" / "index.md").read_text()
    section = page.split("## Efficiency robustness", 1)[1].split("##", 1)[0]  # the compute attack, not gate-flip
    assert "compute-inflation-2" in section and "gate-flip" not in section
    compute = next(r for r in summary if r["attack_label"] == "compute-inflation-2" and r["epsilon"] > 0)
    assert 0 <= compute["recovery_blocks"] <= 1 and compute["recovery"] == compute["recovery"]  # run: FLOPs known


def test_linf_and_l2_attacks_never_share_a_run_or_a_report(gated_checkpoint: Path, synthetic_npz_dir: Path,
                                                           tmp_path: Path) -> None:
    """Every epsilon applies to every attack, and the worst case and the sanity checks compare attacks at one
    epsilon: FGSM at 8/255 beside APGD-L2 at 8/255 (a tiny L2 ball) gave a worst case over both and a false
    'iterative attacks are weaker' masking warning. A run of L2 attacks alone reports its norm."""
    common = ["--checkpoint", f"tiny={gated_checkpoint}", "--data-dir", str(synthetic_npz_dir), "--n-samples", "8"]
    code, output = invoke("attack", *common, "--attack", "fgsm", "--attack", "apgd-l2:steps=2", "--eps", "8/255",
                          "--out", str(tmp_path / "mixed"))
    assert code == 2 and "'fgsm' (Linf) and 'apgd-l2:steps=2' (L2) bound different norms" in output, output
    assert not (tmp_path / "mixed").exists()
    for name, attacks, eps in (("linf", ["--suite", "quick"], "8/255"), ("l2", ["--attack", "apgd-l2:steps=2"], "0.5")):
        code, output = invoke("attack", *common, *attacks, "--eps", eps, "--out", str(tmp_path / name))
        assert code == 0, output
    for name in ("linf", "l2"):
        code, output = invoke("report", str(tmp_path / name), "--out", str(tmp_path / f"report-{name}"), "--no-probe")
        assert code == 0, output
    linf, l2 = ((tmp_path / f"report-{name}" / "index.md").read_text() for name in ("linf", "l2"))
    assert "Perturbations: L-infinity balls" in linf and "Perturbations: L2 balls" in l2
    # an early-exit chain's per-attack figures are the chain so far: the threat model says so
    assert "is the chain up to it" in linf and "chain" not in l2
    code, output = invoke("report", str(tmp_path / "linf"), str(tmp_path / "l2"), "--out", str(tmp_path / "both"),
                          "--no-probe")
    assert code == 2 and "report each norm apart" in output and not (tmp_path / "both").exists()


def test_epsilons_print_as_fractions_of_255_below_one_and_as_numbers_otherwise() -> None:
    from aigrobust.evaluation.metrics import format_eps

    assert [format_eps(e) for e in (0.0, 2 / 255, 8 / 255, 0.03, 0.5, 1.0, 2.0)] == \
        ["0", "2/255", "8/255", "0.03", "0.5", "1", "2"]


def test_robust_findings_judge_the_goals_from_paired_per_sample_records() -> None:
    """Synthetic records with known answers: the plain robust model holds 40 of 100 images under the whole standard
    suite, the gated one 30 of those 40 (10 points behind: goal missed), the compute-robust one 28 (2 behind its
    gated twin, FLOPs 1.02x under the compute attack: met)."""
    import numpy as np
    import pandas as pd
    from robust_findings import Models, RobustFindings

    from attacks import SUITES, attack_from_spec

    n, eps = 100, 8 / 255
    suite = [attack_from_spec(spec).spec for spec in SUITES["standard"]]
    compute = attack_from_spec("compute-inflation").spec
    robust_on = {"resnet20.at": 40, "aig20.at": 30, "aig20.at_compute": 28}
    flops = {"resnet20.at": (100.0, 100.0), "aig20.at": (78.0, 95.0), "aig20.at_compute": (60.0, 61.2)}
    rows = []
    for model, kept in robust_on.items():
        gates = "" if model == "resnet20.at" else "1010"
        for sample in range(n):
            clean_flops, adv_flops = flops[model]
            base = dict(model=model, defense="none", defense_grad="none", gate_grad="exact" if gates else "none",
                        sample=sample, clean_correct=sample < 80, clean_gates=gates or np.nan,
                        adv_gates=gates or np.nan, hamming=0.0, clean_flops=clean_flops, goal="misclassify")
            # the last attack of the suite is the one that fools the samples beyond `kept`
            for i, spec in enumerate(suite):
                fooled = sample >= kept and i == len(suite) - 1
                rows.append({**base, "attack": spec, "epsilon": eps, "adv_correct": sample < 80 and not fooled,
                             "adv_flops": clean_flops})
            if gates:
                for e, adv in ((0.0, clean_flops), (eps, adv_flops)):
                    rows.append({**base, "attack": compute, "epsilon": e, "adv_correct": sample < 80,
                                 "adv_flops": adv, "goal": "gates"})
    findings = RobustFindings(pd.DataFrame(rows), Models(), {model: 100.0 for model in robust_on})
    assert findings.standard("aig20.at").sum() == 30
    difference, lo, hi, common = findings.difference(findings.standard("aig20.at"), findings.standard("resnet20.at"))
    assert common == n and difference == pytest.approx(-0.10) and lo <= -0.10 <= hi and hi < 0
    ratio, lo, hi, _ = findings.flops_ratio("aig20.at_compute", "compute-inflation", eps)
    assert ratio == pytest.approx(1.02) and lo == pytest.approx(1.02) == hi  # the same ratio on every image
    goals = "\n".join(findings.goal_table())
    status = {line.split("|")[1].strip(): line.rstrip(" |").rsplit("|", 1)[1].strip()
              for line in goals.splitlines() if line.startswith("| aig20") or line.startswith("| resnet20")}
    assert status == {"resnet20.at": "met", "aig20.at": "missed: robust", "aig20.at_compute": "met"}
    assert "40.0 [" in goals and "0.780" in goals and "1.020" in goals


def test_the_sample_count_sentence_gives_the_range_where_runs_differ_in_size() -> None:
    """A study that puts 1000-image runs beside 200-image ones says so, with the widest interval (at the smallest n);
    the compact table marks a setting that did not run at an epsilon instead of printing nan."""
    import pandas as pd

    from aigrobust.evaluation.metrics import compact_table
    from aigrobust.reporting.tables import sample_counts_sentence

    def rows(model: str, n: int, epsilons: tuple[float, ...]) -> pd.DataFrame:
        return pd.DataFrame([{"model": model, "defense": "none", "defense_grad": "none", "attack": "fgsm",
                              "gate_grad": "none", "epsilon": eps, "sample": s} for eps in epsilons for s in range(n)])

    same = rows("a", 48, (0.0, 0.1))
    assert sample_counts_sentence(same) == ("n = 48 samples per setting: a 95% interval on an accuracy is at most "
                                            "+-14.1 points.")
    mixed = pd.concat([rows("a", 200, (0.0, 0.1)), rows("b", 1000, (0.0,))])
    assert sample_counts_sentence(mixed).startswith("n = 200 to 1000 samples per setting")
    assert "+-6.9 points (at n = 200)" in sample_counts_sentence(mixed)
    summary = pd.DataFrame([{"model": m, "defense": "none", "defense_grad": "none", "attack": "fgsm",
                             "gate_grad": "none", "goal": "misclassify", "epsilon": eps, "robust_acc": 0.5,
                             "robust_acc_lo": 0.4, "robust_acc_hi": 0.6, "flops_ratio": 1.0, "unchanged_gates": 1.0}
                            for m, epsilons in (("a", (0.0, 2 / 255, 8 / 255)), ("b", (0.0, 8 / 255)))
                            for eps in epsilons])
    table = compact_table(summary)
    assert table.loc[table["model"] == "b", "2/255"].item() == "-"
    assert table.loc[table["model"] == "a", "2/255"].item() == "50.0 [40.0, 60.0]"


def test_robust_accuracy_against_flops_points_and_figure(monkeypatch: pytest.MonkeyPatch) -> None:
    """The figure that answers 'does gating buy robustness per FLOP': each point is the records' worst case and mean
    executed FLOPs; plain models of two costs make the reference line; one legend naming every model (ten here),
    outside the axes; at most 2000 px wide."""
    import io

    import pandas as pd
    from PIL import Image

    from aigrobust.reporting import plots
    from aigrobust.reporting.tables import robustness_per_flop_points

    rows = []
    specs = {"pgd:steps=10": "misclassify", "compute-inflation:steps=5": "gates"}
    more_gated = tuple((f"gated-{k}", (42 + 4 * k) * 1e6, 0.05 * k) for k in range(1, 8))
    for model, flops, robust in (("plain-small", 40e6, 0.3), ("plain-big", 80e6, 0.5), ("gated", 50e6, 0.45),
                                 *more_gated):
        for sample in range(20):
            for attack, goal in specs.items():
                clean_flops = flops + (sample % 4) * 1e6 if model.startswith("gated") else flops
                rows.append({"model": model, "defense": "none", "defense_grad": "none", "attack": attack,
                             "gate_grad": "exact" if model.startswith("gated") else "none", "epsilon": 8 / 255,
                             "sample": sample, "goal": goal, "clean_flops": clean_flops,
                             "adv_flops": clean_flops * (1.2 if goal == "gates" else 1.0),
                             "robust": sample < robust * 20 or goal == "gates"})
    records = pd.DataFrame(rows)
    summary = pd.DataFrame([
        {"model": m, "defense": "none", "attack": a, "epsilon": 8 / 255, "goal": g,
         "robust_acc": float(grp["robust"].mean()), "robust_acc_lo": float(grp["robust"].mean()) - 0.1,
         "robust_acc_hi": float(grp["robust"].mean()) + 0.1, "adv_flops": float(grp["adv_flops"].mean())}
        for (m, a, g), grp in records.groupby(["model", "attack", "goal"], sort=False)])
    points = robustness_per_flop_points(records, summary).set_index("model")
    assert points.loc["plain-big", "robust_acc"] == pytest.approx(0.5)
    assert points.loc["gated", "mflops"] == pytest.approx(51.5)  # 50 + mean of 0, 1, 2, 3
    assert points.loc["gated", "mflops_attacked"] == pytest.approx(51.5 * 1.2)
    assert points.loc["gated", "gated"] and not points.loc["plain-big", "gated"]
    assert points.loc["plain-big", "mflops_ci"] == 0 < points.loc["gated", "mflops_ci"]
    seen = {}
    original = plots.save_figure

    def capture(fig):  # type: ignore[no-untyped-def]
        seen["legend"] = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
        seen["lines"] = [line for ax in fig.axes for line in ax.get_lines()]
        return original(fig)

    monkeypatch.setattr(plots, "save_figure", capture)
    png, _ = plots.figure_robustness_per_flop(robustness_per_flop_points(records, summary))
    assert Image.open(io.BytesIO(png)).size[0] <= 2000
    # one entry per model, none for the grey reference line (the caption names it)
    assert sorted(seen["legend"]) == sorted(points.index) and "plain models (most robust per cost)" not in seen["legend"]
    reference = [line for line in seen["lines"] if line.get_label().startswith("plain models")]
    assert list(reference[0].get_xdata()) == [40.0, 80.0] and list(reference[0].get_ydata()) == [30.0, 50.0]


def _overlapping_texts(fig) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """Pairs of drawn, non-empty texts of a figure whose boxes overlap (by more than a pixel or two); tick labels
    outside their axis's view are not drawn and do not count."""
    from matplotlib.text import Text

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    hidden = set()
    for ax in fig.axes:
        for axis, (low, high), index in ((ax.xaxis, sorted(ax.get_xlim()), 0), (ax.yaxis, sorted(ax.get_ylim()), 1)):
            for label in axis.get_ticklabels(which="both"):
                if not low - 1e-9 <= label.get_position()[index] <= high + 1e-9:
                    hidden.add(id(label))
    boxes = []
    for text in fig.findobj(Text):
        drawn = text.get_visible() and (text.axes is None or text.axes.get_visible())
        if drawn and text.get_text().strip() and id(text) not in hidden:
            box = text.get_window_extent(renderer)
            boxes.append((text.get_text(), box.shrunk(0.97, 0.85)))
    return [(a, b) for i, (a, box_a) in enumerate(boxes) for b, box_b in boxes[i + 1:]
            if box_a.width > 0 and box_b.width > 0 and box_a.overlaps(box_b)]


def test_every_figure_of_a_busy_report_is_readable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The robust study's committed runs (five models, 4 defense settings, ~20 attacks, gates and exits' figures):
    every figure at most 2000 px wide, at most 8 legend entries, no text drawn over other text."""
    from aigrobust.reporting import gate_plots, plots

    study = PROJECT_ROOT / "reports" / "cifar10-robust" / "runs" / "study"
    checked: dict[str, list[str]] = {}
    original = plots.save_figure

    def inspect(fig):  # type: ignore[no-untyped-def]
        import inspect as frames

        caller = frames.stack()[1].function
        width = fig.get_size_inches()[0] * 110
        entries = sum(len(legend.get_texts()) for legend in fig.legends) + sum(
            len(ax.get_legend().get_texts()) for ax in fig.axes if ax.get_legend() is not None)
        problems = [f"{width:.0f} px wide"] if width > 2000 else []
        problems += [f"{entries} legend entries"] if entries > 8 else []
        problems += [f"'{a}' over '{b}'" for a, b in _overlapping_texts(fig)]
        checked[caller] = problems
        return original(fig)

    monkeypatch.setattr(plots, "save_figure", inspect)
    monkeypatch.setattr(gate_plots, "save_figure", inspect)
    runs = [str(study / name) for name in ("gates", "jpeg", "grads-8", "standard-2-plain")]
    code, output = invoke("report", *runs, "--out", str(tmp_path / "report"), "--no-probe")
    assert code == 0, output
    assert len(checked) >= 7, sorted(checked)
    assert {name: p for name, p in checked.items() if p} == {}


@pytest.mark.parametrize("n_models", [1, 3, 4, 7])
def test_per_class_execution_rates_wrap_at_three_panels_a_row(n_models: int) -> None:
    """Five dynamic models side by side made a 2200 px figure: panels wrap at three a row, every model drawn."""
    import io

    import pandas as pd
    from PIL import Image

    from aigrobust.reporting.gate_plots import figure_class_rates

    classes = pd.DataFrame([{"model": f"model-{m}", "class": f"class {c}", "layer": layer, "clean_rate": (c + layer) / 20}
                            for m in range(n_models) for c in range(10) for layer in range(9)])
    png, svg = figure_class_rates(classes)
    width, height = Image.open(io.BytesIO(png)).size
    assert width <= 2000 and height <= 396 * -(-n_models // 3) + 10
    assert all(f"model-{m}".encode() in svg for m in range(n_models))
