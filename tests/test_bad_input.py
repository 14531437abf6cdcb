"""Bad input: every case gets a non-zero exit, one clear line, no traceback, and nothing half-written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from aigrobust import create_model
from aigrobust.cli import cli
from aigrobust.models.checkpoints import save_checkpoint


def _with_hostile_kwargs(source: Path, target: Path) -> Path:
    """``source`` with model_kwargs asking for 10**10 classes and every declared hash recomputed to match."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from aigrobust.models.checkpoints import METADATA_KEY, model_sha256

    with safe_open(str(source), "pt") as handle:
        metadata = handle.metadata()
        state = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118  (safe_open has no iterator)
    meta = json.loads(metadata[METADATA_KEY])
    meta["model_kwargs"] = {"num_classes": 10**10}
    meta["model_sha256"] = model_sha256(meta["weights_sha256"], meta)
    save_file(state, str(target), metadata={**metadata, METADATA_KEY: json.dumps(meta, sort_keys=True)})
    return target


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad")
    paths: dict[str, Path] = {}
    good = root / "good.safetensors"
    save_checkpoint(create_model("tiny_aig"), good)
    paths["good"] = good
    truncated = root / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:500])
    paths["truncated"] = truncated
    corrupt = root / "corrupt.th"
    corrupt.write_bytes(b"\x80\x02garbage" * 10)
    paths["corrupt"] = corrupt
    hundred = root / "hundred.safetensors"
    save_checkpoint(create_model("tiny_aig", num_classes=100), hundred)
    paths["hundred"] = hundred
    plain = root / "plain.safetensors"
    save_checkpoint(create_model("tiny_resnet"), plain)
    paths["plain"] = plain
    paths["huge_kwargs"] = _with_hostile_kwargs(good, root / "huge_kwargs.safetensors")
    rng = np.random.default_rng(0)
    data = root / "data"
    data.mkdir()
    np.savez(data / "cifar10_test.npz", images=rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8),
             labels=rng.integers(0, 10, 8))
    paths["data"] = data
    empty = root / "empty"
    empty.mkdir()
    paths["empty"] = empty
    report_folder = root / "report_folder"  # a report's own summary.csv, which an attack run must not overwrite
    report_folder.mkdir()
    (report_folder / "summary.csv").write_text("model,robust_acc\nresnet20,0.25\n")
    paths["report_folder"] = report_folder
    unfinished = root / "unfinished"  # a run stopped after its first batch: parts, no records yet
    (unfinished / ".parts" / "tiny_aig").mkdir(parents=True)
    (unfinished / ".parts" / "tiny_aig" / "batch-00000.csv.gz").write_bytes(b"")
    paths["unfinished"] = unfinished
    wrong_size = root / "wrong_size"
    wrong_size.mkdir()
    np.savez(wrong_size / "cifar10_test.npz", images=np.zeros((4, 28, 28, 3), np.uint8), labels=np.zeros(4, np.int64))
    paths["wrong_size"] = wrong_size
    bad_labels = root / "bad_labels"
    bad_labels.mkdir()
    np.savez(bad_labels / "cifar10_test.npz", images=np.zeros((4, 32, 32, 3), np.uint8), labels=np.array([0, 1, 2, 12]))
    paths["bad_labels"] = bad_labels
    blocker = root / "a_file"
    blocker.write_text("x")
    paths["blocker"] = blocker
    baseline = root / "baseline.json"
    baseline.write_text('{"format": "aigrobust-baseline", "spec": ')
    paths["baseline"] = baseline
    _pipes(root, paths)
    _bad_data(root, paths)
    _bad_checkpoints(root, paths)
    _bad_runs(root, paths)
    return paths


def _pipes(root: Path, paths: dict[str, Path]) -> None:
    """Named pipes where a file is expected: reading one would block for ever."""
    import os

    for name, where in (("pipe_data", "cifar10_test.npz"), ("pipe_run", "run.json")):
        (root / name).mkdir()
        os.mkfifo(root / name / where)
        paths[name] = root / name
    os.mkfifo(root / "pipe.safetensors")
    paths["pipe_checkpoint"] = root / "pipe.safetensors"
    os.mkfifo(root / "pipe_baseline.json")
    paths["pipe_baseline"] = root / "pipe_baseline.json"


def _bad_data(root: Path, paths: dict[str, Path]) -> None:
    good = (paths["data"] / "cifar10_test.npz").read_bytes()
    for name, write in (
        ("truncated_npz", lambda f: f.write_bytes(good[: len(good) // 2])),
        ("zero_images", lambda f: np.savez(f, images=np.zeros((0, 32, 32, 3), np.uint8), labels=np.zeros(0, np.int64))),
        ("count_mismatch", lambda f: np.savez(f, images=np.zeros((4, 32, 32, 3), np.uint8), labels=np.zeros(3, np.int64))),
        ("float_labels", lambda f: np.savez(f, images=np.zeros((4, 32, 32, 3), np.uint8), labels=np.zeros(4))),
    ):
        folder = root / name
        folder.mkdir()
        write(folder / "cifar10_test.npz")
        paths[name] = folder


def _with_metadata(source: Path, target: Path, edit, rehash: bool) -> Path:
    """A copy of ``source`` whose aigrobust metadata ``edit`` changed; ``rehash`` recomputes the model hash, as
    someone writing a bad file on purpose would (so the metadata check itself must catch it)."""
    import json

    from safetensors.torch import load, save

    from aigrobust.models.checkpoints import METADATA_KEY, model_sha256

    raw = source.read_bytes()
    meta = json.loads(json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])["__metadata__"][METADATA_KEY])
    meta = edit(meta)
    if rehash and isinstance(meta, dict):
        meta["model_sha256"] = model_sha256(meta["weights_sha256"], meta)
    target.write_bytes(save(dict(load(raw)), metadata={METADATA_KEY: json.dumps(meta)}))
    return target


def _bad_checkpoints(root: Path, paths: dict[str, Path]) -> None:
    good = paths["good"]

    def set_norm(mean, std):
        return lambda m: {**m, "normalization": {"mean": mean, "std": std}}

    paths["edited_norm"] = _with_metadata(good, root / "edited_norm.safetensors",
                                          set_norm([0.1, 0.1, 0.1], [0.5, 0.5, 0.5]), rehash=False)
    paths["zero_std"] = _with_metadata(good, root / "zero_std.safetensors", set_norm([0.5] * 3, [0, 0, 0]), True)
    paths["nan_std"] = _with_metadata(good, root / "nan_std.safetensors", set_norm([0.5] * 3, [float("nan")] * 3), True)
    paths["mean_abc"] = _with_metadata(good, root / "mean_abc.safetensors", set_norm("abc", [0.2] * 3), True)
    paths["meta_list"] = _with_metadata(good, root / "meta_list.safetensors", lambda m: [m], False)
    paths["bad_kwargs"] = _with_metadata(good, root / "bad_kwargs.safetensors",
                                         lambda m: {**m, "model_kwargs": {"depthz": 3}}, True)
    paths["kwargs_list"] = _with_metadata(good, root / "kwargs_list.safetensors",
                                          lambda m: {**m, "model_kwargs": [1, 2]}, True)
    paths["format1"] = _with_metadata(good, root / "format1.safetensors",
                                      lambda m: {k: v for k, v in m.items() if k != "model_sha256"}, False)


def _bad_runs(root: Path, paths: dict[str, Path]) -> None:
    import gzip
    import json
    import shutil

    run = root / "run"
    result = CliRunner().invoke(cli, ["attack", "--checkpoint", str(paths["good"]), "--data-dir", str(paths["data"]),
                                      "--eps", "8/255", "--out", str(run)])
    assert result.exit_code == 0, result.output
    paths["run"] = run
    text = gzip.decompress((run / "records.csv.gz").read_bytes()).decode()
    lines = text.splitlines(keepends=True)
    cut = root / "run_cut_rows"
    shutil.copytree(run, cut)
    (cut / "records.csv.gz").write_bytes(gzip.compress("".join(lines[:-3]).encode()))
    paths["run_cut_rows"] = cut
    header_only = root / "header_only"
    header_only.mkdir()
    (header_only / "records.csv.gz").write_bytes(gzip.compress(lines[0].encode()))
    paths["header_only"] = header_only
    mid_row = root / "mid_row"
    mid_row.mkdir()
    (mid_row / "records.csv.gz").write_bytes(gzip.compress(text.encode())[:-40])
    paths["mid_row"] = mid_row
    moved = root / "moved_run"  # a run copied from a machine whose data folder is not here
    shutil.copytree(run, moved)
    document = json.loads((moved / "run.json").read_text())
    document["data"]["data_dir"] = str(root / "elsewhere")
    (moved / "run.json").write_text(json.dumps(document))
    paths["moved_run"] = moved
    locked = root / "locked"
    shutil.copytree(run, locked)
    import os

    (locked / ".lock").write_text(str(os.getppid()))  # a live process that is not this one holds the folder
    paths["locked"] = locked
    _bad_baselines(root, paths)


def _bad_baselines(root: Path, paths: dict[str, Path]) -> None:
    """Variants of a valid baseline made from the fixture's run; each breaks one field."""
    import json

    folder = root / "ci"
    good = folder / "baseline.json"
    result = CliRunner().invoke(cli, ["check", "--baseline", str(good), "--init-from", str(paths["run"])])
    assert result.exit_code == 0, result.output
    document = json.loads(good.read_text())
    paths["good_baseline"] = good
    swapped = root / "swapped"
    swapped.mkdir()
    with np.load(paths["data"] / "cifar10_test.npz") as archive:
        np.savez(swapped / "cifar10_test.npz", images=255 - archive["images"], labels=archive["labels"])

    def variant(name: str, edit) -> None:
        changed = json.loads(json.dumps(document))
        edit(changed)
        (folder / f"{name}.json").write_text(json.dumps(changed))
        paths[f"baseline_{name}"] = folder / f"{name}.json"

    def spec(key, value):
        return lambda d: d["spec"].__setitem__(key, value)

    def model_checkpoint(value):
        return lambda d: next(iter(d["spec"]["models"].values())).__setitem__("checkpoint", value)

    variant("no_metrics", lambda d: d.__setitem__("metrics", []))
    variant("huge_tolerance", lambda d: d["tolerances"].__setitem__("robust_acc", 1e9))
    variant("tolerance_abc", lambda d: d["tolerances"].__setitem__("robust_acc", "abc"))
    variant("unknown_tolerance", lambda d: d["tolerances"].__setitem__("accuracy", 0.01))
    variant("metric_without_robust_acc", lambda d: d["metrics"][0].pop("robust_acc"))
    variant("eps_abc", spec("epsilons", ["abc"]))
    variant("eps_5", spec("epsilons", [5.0]))
    variant("batch_size_0", spec("batch_size", 0))
    variant("models_list", spec("models", ["tiny_aig"]))
    variant("unknown_attack", spec("attacks", ["fgsn"]))
    variant("no_samples", spec("sample_indices", []))
    variant("repeated_samples", spec("sample_indices", [0, 1, 1]))
    variant("unknown_model", lambda d: next(iter(d["spec"]["models"].values())).__setitem__("model", "resnet2O"))
    variant("other_model", lambda d: next(iter(d["spec"]["models"].values())).__setitem__("model", "resnet20"))
    variant("no_model_hash", lambda d: next(iter(d["spec"]["models"].values())).pop("sha256"))
    variant("no_data_hash", lambda d: d["spec"].pop("data_sha256"))
    variant("missing_samples", spec("sample_indices", [0, 10**9]))
    variant("absolute_checkpoint", model_checkpoint("/etc/passwd"))
    variant("escaping_checkpoint", model_checkpoint("../../../../../../etc/passwd"))
    variant("swapped_images", spec("data_dir", "../swapped"))


def cases(p: dict[str, Path], out: Path) -> list[tuple[str, list[str], str]]:
    attack = ["attack", "--checkpoint", str(p["good"]), "--data-dir", str(p["data"]), "--out", str(out)]
    return [
        ("unknown model", ["attack", "--model", "aig2O", "--eps", "0.1", "--out", str(out)], "did you mean"),
        ("unknown attack", [*attack, "--eps", "0.1", "--attack", "fgsn"], "unknown attack 'fgsn'"),
        ("unknown defense", [*attack, "--eps", "0.1", "--defense", "blur:3"], "unknown defense 'blur'"),
        ("a checkpoint labelled with another model's name",
         [*attack[:1], "--checkpoint", f"resnet20={p['good']}", *attack[3:], "--eps", "0.1"],
         "the label names the registered model resnet20, but the file holds a tiny_aig"),
        ("one checkpoint twice", [*attack, "--checkpoint", str(p["good"]), "--eps", "0.1"],
         "model name 'tiny_aig' given twice"),
        ("two labels that differ only in case",
         [*attack[:1], "--checkpoint", f"Mine={p['good']}", "--checkpoint", f"mine={p['good']}", *attack[3:], "--eps",
          "0.1"], "model names 'Mine' and 'mine' differ only in case"),
        ("negative epsilon", [*attack, "--eps", "-0.1"], "outside [0, 1]"),
        ("NaN epsilon", [*attack, "--eps", "nan"], "outside [0, 1]"),
        ("epsilon above 1", [*attack, "--eps", "1.5"], "outside [0, 1]"),
        ("epsilon 'abc'", [*attack, "--eps", "abc"], "not a number"),
        ("epsilon '8/0'", [*attack, "--eps", "8/0"], "not a number"),
        ("no epsilon", attack, "at least one --eps"),
        ("epsilon 0 alone", [*attack, "--eps", "0"], "--eps 0 alone attacks nothing"),
        ("EOT draws where nothing is random", [*attack, "--eps", "0.1", "--eot-draws", "5"],
         "--eot-draws sets the draws EOT averages, and nothing here is random"),
        ("a defense gradient without a defense", [*attack, "--eps", "0.1", "--defense-grad", "bpda"],
         "no --defense was given"),
        ("n-samples 0", [*attack, "--eps", "0.1", "--n-samples", "0"], "--n-samples"),
        ("n-samples negative", [*attack, "--eps", "0.1", "--n-samples", "-5"], "--n-samples"),
        ("batch size 0", [*attack, "--eps", "0.1", "--batch-size", "0"], "--batch-size"),
        ("checkpoint missing", ["eval", "--checkpoint", str(out / "none.safetensors")], "not found"),
        ("checkpoint truncated", ["eval", "--checkpoint", str(p["truncated"])], "truncated or corrupt"),
        ("checkpoint corrupt", ["eval", "--checkpoint", str(p["corrupt"])], "could not be loaded safely"),
        ("checkpoint asking for 10**10 classes, hashes recomputed", ["eval", "--checkpoint", str(p["huge_kwargs"])],
         "parameters (more than 1,000,000,000): not a network this tool builds"),
        ("checkpoint of another architecture", ["eval", "--model", "resnet20", "--checkpoint", str(p["good"])],
         "holds weights of tiny_aig, not of resnet20"),
        ("checkpoint of another number of classes",
         ["eval", "--checkpoint", str(p["hundred"]), "--data-dir", str(p["data"])], "predicts 100 classes"),
        ("dataset path missing", [*attack[:3], "--data-dir", str(out / "nodata"), "--eps", "0.1", "--out", str(out)],
         "does not exist"),
        ("dataset folder empty", [*attack[:3], "--data-dir", str(p["empty"]), "--eps", "0.1", "--out", str(out)],
         "no .npz file"),
        ("wrong image size", [*attack[:3], "--data-dir", str(p["wrong_size"]), "--eps", "0.1", "--out", str(out)],
         "32x32"),
        ("labels out of range", [*attack[:3], "--data-dir", str(p["bad_labels"]), "--eps", "0.1", "--out", str(out)],
         "labels must lie in 0..9"),
        ("data file is a pipe", ["attack", "--checkpoint", str(p["good"]), "--data-dir", str(p["pipe_data"]),
                                 "--out", str(out), "--eps", "0.1"], "is not a regular file"),
        ("checkpoint is a pipe", ["attack", "--checkpoint", str(p["pipe_checkpoint"]), "--data-dir", str(p["data"]),
                                  "--out", str(out), "--eps", "0.1"], "is not a regular file"),
        ("run.json is a pipe", ["report", str(p["pipe_run"]), "--out", str(out)], "is not a regular file"),
        ("baseline is a pipe", ["check", "--baseline", str(p["pipe_baseline"])], "is not a regular file"),
        ("output is a file", [*attack[:5], "--eps", "0.1", "--out", str(p["blocker"])], "exists and is not a folder"),
        ("output folder not writable", [*attack[:5], "--eps", "0.1", "--out", str(p["blocker"] / "run")],
         "not writable"),
        ("baseline JSON malformed", ["check", "--baseline", str(p["baseline"])], "not valid JSON"),
        ("baseline --init-from over an existing baseline",
         ["check", "--baseline", str(p["good_baseline"]), "--init-from", str(p["run"])], "exists: --init-from would"),
        ("--init-from without --baseline", ["check", "--sanity", str(p["run"]), "--init-from", str(p["run"])],
         "--init-from needs --baseline FILE"),
        ("--update without --baseline", ["check", "--sanity", str(p["run"]), "--update"], "--update needs --baseline"),
        ("CUDA where there is none", ["eval", "--model", "tiny_aig", "--device", "cuda"], "no CUDA device"),
        # attack settings: typed and range-checked when parsed, before anything is written
        *[(f"attack spec {spec}", [*attack, "--eps", "0.1", "--attack", spec], needle) for spec, needle in (
            ("pgd:distance=foo", "distance takes linf or l2, got 'foo'"),
            ("pgd:steps=1.5", "steps takes a positive integer up to 100000, got 1.5"),
            ("pgd:steps=abc", "steps takes a positive integer up to 100000, got 'abc'"),
            ("pgd:steps=0", "steps takes a positive integer"),
            ("pgd:rel_stepsize=-0.5", "rel_stepsize takes a number > 0"),
            ("pgd:rel_stepsize=nan", "rel_stepsize takes a number > 0"),
            ("pgd:restarts=0", "restarts takes a positive integer"),
            ("pgd:random_start=maybe", "has no setting 'random_start'"),
            ("bim:stop_at_success=maybe", "stop_at_success takes true or false"),
            ("pgd:stepz=3", "has no setting 'stepz'"),
            ("pgd:steps=3,steps=4", "given twice"),
            ("pgd:steps", "is not key=value"),
            ("apgd:rho=1.5", "rho takes a number in (0, 1)"),
            ("mifgsm:decay=-1", "decay takes a number >= 0"),
            ("square:n_queries=0", "n_queries takes a positive integer"),
            ("square:p_init=2", "p_init takes a number in (0, 1]"),
            ("foolbox:LinfPGD:steps=abc", "steps takes a positive integer"),
            ("foolbox:LinfPGD:abs_stepsize=-1", "abs_stepsize takes a number > 0"),
            ("foolbox:Nope", "foolbox has no attack 'Nope'"),
            ("gate-flip:steps=-2", "steps takes a positive integer"),
        )],
        ("epsilon 5.0", [*attack, "--eps", "5.0"], "outside [0, 1]"),
        # a run whose tables would compare what cannot be compared, or silently leave out what was asked for
        ("Linf and L2 attacks in one run", [*attack, "--eps", "0.1", "--attack", "pgd", "--attack", "pgd-l2"],
         "bound different norms"),
        ("a deterministic defense under eot alone", [*attack, "--eps", "0.1", "--defense", "jpeg:75",
                                                     "--defense-grad", "eot"], "jpeg:75 is deterministic"),
        ("epsilon inf", [*attack, "--eps", "inf"], "outside [0, 1]"),
        # training numbers: nan and inf refused at parse time
        *[(f"train {flag} {value}", ["train", "--model", "tiny_aig", "--data-dir", str(p["data"]), "--out", str(out),
                                     flag, value], "not a finite number")
          for flag, value in (("--lr", "nan"), ("--lr", "inf"), ("--momentum", "nan"), ("--weight-decay", "inf"),
                              ("--gate-lambda", "nan"), ("--gate-lr-factor", "inf"), ("--target-rate", "nan"))],
        ("gate options for a model without gates", ["train", "--model", "tiny_resnet", "--data-dir", str(p["data"]),
                                                     "--out", str(out), "--target-rate", "0.5"],
         "tiny_resnet has no gates: --target-rate applies to gated models"),
        ("a target warm-up for a model without gates", ["train", "--model", "tiny_resnet", "--data-dir",
                                                        str(p["data"]), "--out", str(out), "--target-warmup", "0.5"],
         "tiny_resnet has no gates: --target-warmup applies to gated models"),
        ("a target warm-up past the run", ["train", "--model", "tiny_aig", "--data-dir", str(p["data"]), "--out",
                                           str(out), "--target-warmup", "1.5"], "--target-warmup"),
        ("--init torchvision for a CIFAR model", ["train", "--model", "tiny_resnet", "--data-dir", str(p["data"]),
                                                   "--out", str(out), "--init", "torchvision"],
         "torchvision has no weights for tiny_resnet"),
        ("--init from a gated model into a plain one", ["train", "--model", "tiny_resnet", "--data-dir", str(p["data"]),
                                                        "--out", str(out), "--init", str(p["good"])],
         "weights, which do not fit tiny_resnet"),
        ("--init naming nothing", ["train", "--model", "tiny_aig", "--data-dir", str(p["data"]), "--out", str(out),
                                   "--init", "resnet20.robust"], "unknown pretrained tag 'robust' for resnet20"),
        # numbers that collide or overflow
        ("an epsilon that rounds into 0", [*attack, "--eps", "1e-9"], "not above the resolution"),
        ("a seed of 2^63", [*attack, "--eps", "0.1", "--seed", str(2**63)], "--seed"),
        ("a learning rate past any sane range", ["train", "--model", "tiny_aig", "--data-dir", str(p["data"]),
                                                 "--out", str(out), "--lr", "1e39"], "--lr"),
        # adversarial training settings
        *[(f"train --adversarial {spec}", ["train", "--model", model, "--data-dir", str(p["data"]), "--out", str(out),
                                           "--adversarial", spec], needle)
          for model, spec, needle in (
              ("tiny_aig", "n-fgsm:eps=0", "eps takes a number above 1e-07 and at most 1"),
              ("tiny_aig", "n-fgsm:eps=1.5", "eps takes a number above 1e-07 and at most 1"),
              ("tiny_aig", "n-fgsm:eps=nan", "eps takes a number above 1e-07 and at most 1"),
              ("tiny_aig", "madry", "unknown adversarial training method 'madry'"),
              ("tiny_aig", "pgd:stepz=3", "pgd has no setting 'stepz'"),
              ("tiny_aig", "pgd:steps=2.5", "steps takes a positive integer"),
              ("tiny_aig", "trades:beta=0", "beta takes a number in (0, 100]"),
              ("tiny_aig", "fgsm-rs:alpha=x", "alpha='x' is not a number"),
              ("tiny_aig", "n-fgsm:compute=-1", "compute takes a number >= 0"),
              ("tiny_resnet", "n-fgsm:compute=1", "compute=1 attacks the gates, and tiny_resnet has none"),
          )],
        ("--compute-penalty without a compute attack", ["train", "--model", "tiny_aig", "--data-dir", str(p["data"]),
                                                        "--out", str(out), "--adversarial", "n-fgsm",
                                                        "--compute-penalty", "2"], "add compute=W to --adversarial"),
        ("--ema outside (0, 1)", ["train", "--model", "tiny_aig", "--data-dir", str(p["data"]), "--out", str(out),
                                  "--ema", "1"], "--ema"),
        ("--shortcut for an ImageNet model", ["train", "--model", "resnet50", "--data-dir", str(p["data"]),
                                              "--out", str(out), "--shortcut", "B"],
         "--shortcut applies to CIFAR ResNets"),
        ("gate gradients for models without gates",
         ["attack", "--checkpoint", f"plain={p['plain']}", "--data-dir", str(p["data"]), "--eps", "0.1",
          "--gate-grad", "straight-through", "--out", str(out)], "--gate-grad says how attack gradients pass gates"),
        ("stochastic gates for models without gates",
         ["attack", "--checkpoint", f"plain={p['plain']}", "--data-dir", str(p["data"]), "--eps", "0.1",
          "--gate-mode", "stochastic", "--out", str(out)], "none of plain has any"),
        # data files
        ("truncated .npz (eval)", ["eval", "--checkpoint", str(p["good"]), "--data-dir", str(p["truncated_npz"])],
         "truncated or corrupt"),
        ("truncated .npz (attack)", [*attack[:3], "--data-dir", str(p["truncated_npz"]), "--eps", "0.1", "--out",
                                     str(out)], "truncated or corrupt"),
        ("zero images (eval)", ["eval", "--checkpoint", str(p["good"]), "--data-dir", str(p["zero_images"])],
         "holds no images"),
        ("zero images (attack)", [*attack[:3], "--data-dir", str(p["zero_images"]), "--eps", "0.1", "--out", str(out)],
         "holds no images"),
        ("images and labels of different counts", ["eval", "--checkpoint", str(p["good"]), "--data-dir",
                                                   str(p["count_mismatch"])], "expected images (N, H, W, 3)"),
        ("float labels", ["eval", "--checkpoint", str(p["good"]), "--data-dir", str(p["float_labels"])],
         "labels must be integers"),
        # checkpoint metadata: covered by the model hash, and checked when read
        ("normalization edited after saving", ["eval", "--checkpoint", str(p["edited_norm"])], "changed after saving"),
        ("std zero", ["eval", "--checkpoint", str(p["zero_std"])], "std must be above zero"),
        ("std nan", ["eval", "--checkpoint", str(p["nan_std"])], "holds NaN, which is not JSON"),
        ("mean 'abc'", ["eval", "--checkpoint", str(p["mean_abc"])], "three finite numbers"),
        ("metadata a JSON list", ["eval", "--checkpoint", str(p["meta_list"])], "not an object"),
        ("model_kwargs that do not fit", ["eval", "--checkpoint", str(p["bad_kwargs"])], "do not fit tiny_aig"),
        ("model_kwargs a list", ["eval", "--checkpoint", str(p["kwargs_list"])], "model_kwargs must be an object"),
        ("format-1 checkpoint without a metadata hash", ["eval", "--checkpoint", str(p["format1"])],
         "without a hash over its metadata"),
        ("edited checkpoint in attack", [*attack[:1], "--checkpoint", str(p["edited_norm"]), *attack[3:], "--eps",
                                         "0.1"], "changed after saving"),
        # records
        ("records cut at a line boundary (report)", ["report", str(p["run_cut_rows"]), "--no-probe", "--out",
                                                     str(out)], "does not match its run.json"),
        ("records cut at a line boundary (check)", ["check", "--sanity", str(p["run_cut_rows"])],
         "does not match its run.json"),
        ("records without run.json", ["report", str(p["header_only"]), "--no-probe", "--out", str(out)],
         "has no run.json"),
        ("header-only records", ["report", str(p["header_only"]), "--no-probe", "--unsealed", "--out", str(out)],
         "holds no records"),
        ("gzip cut mid-row", ["report", str(p["mid_row"]), "--no-probe", "--unsealed", "--out", str(out)],
         "truncated or corrupt"),
        ("no records at all", ["report", str(p["empty"]), "--no-probe", "--out", str(out)], "no records"),
        ("an attack run written into a report folder", [*attack[:5], "--eps", "0.1", "--out", str(p["report_folder"])],
         "holds summary.csv but no run.json (not an aigrobust run)"),
        ("a report written over files no report wrote",
         ["report", str(p["run"]), "--no-probe", "--out", str(p["report_folder"])],
         "holds summary.csv but no provenance.json (not an aigrobust report)"),
        ("a report written into a run folder", ["report", str(p["run"]), "--no-probe", "--out", str(p["run"])],
         "is an attack run folder: the report would overwrite its summary.csv"),
        ("a run not finished yet", ["report", str(p["unfinished"]), "--no-probe", "--out", str(out)],
         "is not finished (1 batch file saved, no records yet): finish it with its aigrobust attack command and "
         "--resume"),
        ("a run whose images are not on this machine, probed", ["report", str(p["moved_run"]), "--out", str(out)],
         "--no-probe skips them"),
        # one writer per run folder
        ("a run folder another process holds", [*attack[:5], "--eps", "8/255", "--out", str(p["locked"]), "--resume"],
         "another aigrobust process"),
        ("a finished run without --resume", [*attack[:5], "--eps", "8/255", "--out", str(p["run"])],
         "already holds a run"),
        ("--resume with another command", [*attack[:5], "--eps", "2/255", "--out", str(p["run"]), "--resume"],
         "holds a run with another spec (spec.epsilons [0.0, 0.03137254901960784] -> [0.0, 0.00784313725490196])"),
        # baselines: a typed document, paths inside its folder (or --allow-root), its images as recorded
        *[(f"baseline {name}", ["check", "--baseline", str(p[f"baseline_{name}"]), "--allow-root", str(p["run"].parent)],
           needle) for name, needle in (
            ("no_metrics", "metrics must be a non-empty list"),
            ("huge_tolerance", "tolerance robust_acc must be a number in [0, 0.1]"),
            ("tolerance_abc", "tolerance robust_acc must be a number in [0, 0.1], got 'abc'"),
            ("unknown_tolerance", "unknown tolerance 'accuracy'"),
            ("metric_without_robust_acc", "lacks 'robust_acc'"),
            ("eps_abc", "not a number"),
            ("eps_5", "outside [0, 1]"),
            ("batch_size_0", "batch_size must be a positive integer"),
            ("models_list", "spec models must be an object"),
            ("unknown_attack", "unknown attack 'fgsn'"),
            ("no_samples", "sample_indices must be a non-empty list"),
            ("repeated_samples", "sample_indices repeats sample 1"),
            ("missing_samples", "the data lacks 1 of the baseline's samples (e.g. index 1000000000)"),
            ("unknown_model", "spec model 'tiny_aig': unknown model 'resnet2O'; did you mean"),
            ("other_model", "names a resnet20, but its checkpoint holds a tiny_aig"),
            ("no_model_hash", "its checkpoint's sha256 is missing or malformed"),
            ("no_data_hash", "spec data_sha256 is missing or malformed"),
            ("absolute_checkpoint", "is an absolute path"),
            ("escaping_checkpoint", "outside the baseline's folder"),
            ("swapped_images", "the baseline's images differ from the data found"),
        )],
        ("no model matches a pattern", ["models", "zzz*"], "no model matches 'zzz*'"),
        ("eval with an unknown model", ["eval", "--model", "resnet2O"], "did you mean"),
        ("train with an unknown model", ["train", "--model", "aig2O", "--out", str(out)], "did you mean"),
        ("report with no run folder", ["report", "--out", str(out)], "Missing argument"),
        ("baseline naming files outside its folder, no --allow-root", ["check", "--baseline", str(p["good_baseline"])],
         "outside the baseline's folder"),
    ]


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(f.relative_to(root)): f.read_bytes() for f in sorted(root.rglob("*")) if f.is_file()}


def test_every_bad_input_gets_one_clear_line(files: dict[str, Path], tmp_path: Path) -> None:
    import torch

    out = tmp_path / "out"
    table = cases(files, out)
    assert len(table) >= 60
    before = _snapshot(files["good"].parent)
    for name, args, needle in table:
        if name.startswith("CUDA") and torch.cuda.is_available():
            continue
        result = CliRunner().invoke(cli, args)
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code == 2, f"{name}: exit {result.exit_code}: {result.output}"  # 2: bad input (README)
        assert "Traceback" not in result.output, name
        assert len(lines) == 1, f"{name}: {result.output}"
        assert needle in lines[0], f"{name}: {lines[0]}"
        assert not out.exists(), name  # no case wrote anything
    assert _snapshot(files["good"].parent) == before  # and no input file, run or lock was touched


def test_a_safetensors_file_is_recognised_by_content_not_suffix(files: dict[str, Path], tmp_path: Path) -> None:
    renamed = tmp_path / "model.th"
    renamed.write_bytes(files["good"].read_bytes())
    result = CliRunner().invoke(cli, ["eval", "--checkpoint", str(renamed), "--data-dir", str(files["data"])])
    assert result.exit_code == 0, result.output
    assert "tiny_aig" in result.output


def test_equal_epsilons_merge_and_a_short_split_is_noted(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["attack", "--checkpoint", str(files["good"]), "--data-dir", str(files["data"]),
                                      "--eps", "8/255", "--eps", "0.031372549", "--n-samples", "64", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "--n-samples 64 asks for more images than the test split holds; all 8 are used" in result.output
    import json

    spec = json.loads((out / "run.json").read_text())
    assert len(spec["spec"]["epsilons"]) == 2  # 0 and one 8/255
    assert spec["records"]["rows"] == 2 * 8


def test_training_stops_at_a_non_finite_loss_and_saves_nothing_non_finite(tmp_path: Path) -> None:
    import torch

    from aigrobust.data import ArrayDataset
    from aigrobust.training.config import TrainConfig, TrainingError
    from aigrobust.training.loop import train

    rng = np.random.default_rng(0)
    data = ArrayDataset(rng.integers(0, 256, (32, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 32),
                        tuple(str(i) for i in range(10)), "cifar10", "synthetic")
    config = TrainConfig(model="tiny_aig", epochs=1, batch_size=8, lr=1e30, seed=0)
    with pytest.raises(TrainingError, match="NaN or inf|training diverged"):
        train(config, data, tmp_path / "run", checkpoint_every=1)
    with pytest.raises(ValueError, match="finite"):
        TrainConfig(model="tiny_aig", lr=float("nan"))
    for f in (tmp_path / "run").rglob("*.safetensors"):
        from aigrobust.models.checkpoints import read_checkpoint

        state, _ = read_checkpoint(f)
        assert all(bool(torch.isfinite(t).all()) for t in state.values() if t.is_floating_point())
