"""run.json as a typed document: every committed run folder's document reads and writes back unchanged,
and a damaged one is refused in one line naming the file, not a traceback further on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aigrobust.runs.document import ModelPin, RunDocument
from aigrobust.runs.folder import FinishedRun
from aigrobust.runs.records import RunFolderError
from tests.conftest import PROJECT_ROOT

COMMITTED = sorted(PROJECT_ROOT.glob("reports/**/run.json"))


def test_committed_documents_read_and_write_back_unchanged() -> None:
    assert len(COMMITTED) >= 10
    for path in COMMITTED:
        data = json.loads(path.read_text())
        document = RunDocument.from_dict(data, path)
        assert document.to_dict() == json.loads(json.dumps(data, sort_keys=True)), path
        assert document.models and all(isinstance(pin, ModelPin) for pin in document.models.values())


def test_a_document_of_another_version_keeps_what_it_does_not_know() -> None:
    data = {"spec": {"attacks": ["fgsm:distance=linf"]}, "models": {"m": {"model": "resnet20"}}, "written_by": "v9"}
    document = RunDocument.from_dict(data)
    assert document.models["m"] == ModelPin("resnet20", "pretrained") and document.other == {"written_by": "v9"}
    assert document.to_dict()["written_by"] == "v9"


@pytest.mark.parametrize("damage, words", [
    ([], "not a JSON object"),
    ({"models": ["resnet20"]}, "'models' must be an object"),
    ({"models": {"m": {"model": 7}}}, "model 'm''s name must be text"),
    ({"models": {"m": {"model": "resnet20", "weights_sha256": ["x"]}}}, "weights_sha256 must be text"),
    ({"models": {"m": {"model": "resnet20", "output_index": -1}}}, "output_index must be a whole number"),
    ({"batch_size": True}, "batch_size must be a whole number"),
    ({"spec": "fgsm"}, "'spec' must be an object"),
    ({"records": 5}, "'records' must be an object"),
])
def test_a_damaged_document_is_one_line(tmp_path: Path, damage: object, words: str) -> None:
    (tmp_path / "run.json").write_text(json.dumps(damage))
    with pytest.raises(RunFolderError, match="run.json") as err:
        FinishedRun.open(tmp_path)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_run_json_names_its_layout_version_and_older_or_newer_layouts_are_read_or_refused(tmp_path: Path) -> None:
    """A new run.json carries format_version; a folder without it (every committed run) reads as version 1 and
    resumes; a version newer than this aigrobust reads is refused in one line."""
    from aigrobust.evaluation import EvalSpec
    from aigrobust.runs.document import FORMAT_VERSION, run_document
    from aigrobust.runs.folder import RunFolder

    document = run_document(EvalSpec(attacks=("fgsm",), epsilons=(8 / 255,)), {"batch_size": 4})
    assert document["format_version"] == FORMAT_VERSION
    old = {k: v for k, v in document.items() if k != "format_version"}
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "run.json").write_text(json.dumps(old))
    RunFolder(tmp_path / "old", document, resume=True).release()  # version 1 resumes under today's command
    assert FinishedRun.open(tmp_path / "old").document.format_version == FORMAT_VERSION
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "run.json").write_text(json.dumps({**document, "format_version": FORMAT_VERSION + 1}))
    for attempt in (lambda: RunFolder(tmp_path / "new", document, resume=True),
                    lambda: FinishedRun.open(tmp_path / "new")):
        with pytest.raises(RunFolderError, match="newer than this aigrobust reads") as err:
            attempt()
        assert "\n" not in str(err.value)
