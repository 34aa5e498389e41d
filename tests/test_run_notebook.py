"""run_notebook.py on tiny stand-in projects: a successful run replaces the results as one set; a failed,
interrupted or incomplete one replaces nothing; --output-dir never touches the target.

The real model.ipynb is never executed here: each test writes a notebook of a few cells that
writes figures/ and saved_models/ under OUTPUT_DIR the way model.ipynb does.
"""

import hashlib
import os
import signal
import subprocess
import sys
import time

import nbformat
import pytest

import run_notebook
from conftest import PROJECT_ROOT

SCRIPT = PROJECT_ROOT / "run_notebook.py"
PARAMETERS_SOURCE = 'OUTPUT_DIR = "."\nVERSION = "new"'
WRITE_RESULTS_SOURCE = """\
import json, pathlib
output = pathlib.Path(OUTPUT_DIR)
(output / "figures").mkdir(parents=True, exist_ok=True)
(output / "saved_models").mkdir(parents=True, exist_ok=True)
metrics = {"run": {"tensorflow": "9.9", "keras": "9.9", "cpu": "a test CPU", "total_seconds": 90.0},
           "models": {"tiny": {"test_accuracy": 0.5, "test_loss": 1.25, "params": 1234, "epochs": 1,
                               "train_seconds": 2.0}}}
(output / "figures" / "metrics.json").write_text(json.dumps(metrics))
(output / "figures" / "accuracy.png").write_bytes(b"png of " + VERSION.encode())
(output / "saved_models" / "tiny.keras").write_text(VERSION)
print("tiny epoch 1/1 done")"""
FAILING_SOURCE = 'raise ValueError("broken on purpose")'
# Leaves a sign that it started, then runs long enough to be interrupted.
SLOW_SOURCE = """\
import pathlib, time
(pathlib.Path(OUTPUT_DIR) / "started").touch()
time.sleep(120)"""
OLD_README = "# Fake project\n\n<!-- results:start -->\nold table\n<!-- results:end -->\n\nThe end.\n"


def notebook_of(*sources):
    """A notebook whose first cell is the parameters cell, then one code cell per source."""
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    parameters = nbformat.v4.new_code_cell(PARAMETERS_SOURCE)
    parameters.metadata["tags"] = ["parameters"]
    notebook.cells = [parameters] + [nbformat.v4.new_code_cell(source) for source in sources]
    return notebook


def make_project(folder, *sources):
    """A project folder holding the given notebook and the committed results of an older run."""
    folder.mkdir()
    nbformat.write(notebook_of(*sources), folder / "model.ipynb")
    (folder / "figures").mkdir()
    (folder / "figures" / "old_figure.png").write_bytes(b"old png")
    (folder / "figures" / "metrics.json").write_text('{"old": true}')
    (folder / "figures" / "draw_pad.png").write_bytes(b"screenshot from the browser test")
    (folder / "saved_models").mkdir()
    (folder / "saved_models" / "old_model.keras").write_bytes(b"old model")
    (folder / "README.md").write_text(OLD_README)
    (folder / "notes.txt").write_text("not a result")
    return folder


def snapshot(folder):
    """Every file under folder except runs/, with its SHA-256: equal snapshots mean byte-for-byte equal."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.relative_to(folder).parts[0] != "runs"
    }


def run_script(project, *arguments):
    return subprocess.run([sys.executable, str(SCRIPT), "--target", str(project), *arguments],
                          cwd=project.parent, capture_output=True, text=True, timeout=180)


def injected_cells(notebook):
    return [cell for cell in notebook.cells if "injected-parameters" in cell.metadata.get("tags", [])]


@pytest.mark.slow
def test_successful_run_replaces_notebook_figures_and_models_as_one_set(tmp_path):
    project = make_project(tmp_path / "project", WRITE_RESULTS_SOURCE)
    result = run_script(project)
    assert result.returncode == 0, result.stderr
    assert "tiny epoch 1/1 done" in result.stdout  # The cell's output was shown as it ran.

    # The old run's files are gone, not mixed with the new ones; only the browser test's screenshot,
    # which no notebook run writes, is carried over.
    assert sorted(path.name for path in (project / "figures").iterdir()) == ["accuracy.png", "draw_pad.png",
                                                                             "metrics.json"]
    assert (project / "figures" / "draw_pad.png").read_bytes() == b"screenshot from the browser test"
    assert (project / "figures" / "accuracy.png").read_bytes() == b"png of new"
    assert sorted(path.name for path in (project / "saved_models").iterdir()) == ["tiny.keras"]
    notebook = nbformat.read(project / "model.ipynb", as_version=4)
    assert injected_cells(notebook) == []
    assert notebook.cells[0].source == PARAMETERS_SOURCE
    assert notebook.cells[1].execution_count is not None
    assert "tiny epoch 1/1 done" in notebook.cells[1].outputs[0].text
    assert "OUTPUT_DIR" not in notebook.metadata.papermill.parameters

    readme = (project / "README.md").read_text()
    assert "old table" not in readme
    assert "| tiny | 50.00% | 1.2500 | 1,234 | 1 | 2 |" in readme and readme.endswith("The end.\n")
    assert (project / "notes.txt").read_text() == "not a result"
    # Neither the staging folder nor the backup of the old set is left behind.
    assert list((project / "runs").iterdir()) == []


def test_failed_run_changes_nothing_and_names_the_failing_cell(tmp_path):
    project = make_project(tmp_path / "project", WRITE_RESULTS_SOURCE, FAILING_SOURCE)
    before = snapshot(project)
    result = run_script(project)

    assert result.returncode == 1
    assert snapshot(project) == before
    [partial] = (project / "runs").glob("*/model.ipynb")
    assert "failed in cell 4 (In [4], starting `raise ValueError(\"broken on purpose\")`)" in result.stderr
    assert "ValueError: broken on purpose" in result.stderr
    assert f"The partial notebook, with the traceback, is {partial.relative_to(tmp_path)}." in result.stderr
    # The partial notebook holds the traceback, and the cells before the failure did write their files there.
    assert "broken on purpose" in partial.read_text()
    assert (partial.parent / "saved_models" / "tiny.keras").read_text() == "new"


@pytest.mark.skipif(os.name != "posix", reason="sends SIGTERM")
def test_interrupted_run_changes_nothing(tmp_path):
    project = make_project(tmp_path / "project", WRITE_RESULTS_SOURCE, SLOW_SOURCE)
    before = snapshot(project)
    process = subprocess.Popen([sys.executable, str(SCRIPT), "--target", str(project)], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not list((project / "runs").glob("*/started")) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert list((project / "runs").glob("*/started")), "the slow cell never started"
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()

    assert process.returncode == 128 + signal.SIGTERM
    assert "interrupted (SIGTERM)" in stderr and "were not touched" in stderr
    assert snapshot(project) == before
    [partial] = (project / "runs").glob("*/model.ipynb")
    assert f"The partial notebook is {partial.relative_to(tmp_path)}." in stderr


def test_output_dir_run_never_touches_the_target(tmp_path):
    project = make_project(tmp_path / "project", WRITE_RESULTS_SOURCE)
    before = snapshot(project)
    explore = tmp_path / "explore"
    result = run_script(project, "--output-dir", str(explore), "-p", "VERSION", "explored")

    assert result.returncode == 0, result.stderr
    assert snapshot(project) == before
    assert not (project / "runs").exists()
    assert (explore / "saved_models" / "tiny.keras").read_text() == "explored"
    # A run of its own keeps papermill's injected cell: it says which values this run used.
    [injected] = injected_cells(nbformat.read(explore / "model.ipynb", as_version=4))
    assert "VERSION = \"explored\"" in injected.source


def test_unknown_or_reserved_parameters_are_refused_before_anything_runs(tmp_path, capsys):
    project = make_project(tmp_path / "project", WRITE_RESULTS_SOURCE)
    before = snapshot(project)
    for arguments, expected in [(["-p", "VERSON", "x"], "has no parameter VERSON"),
                                (["-p", "OUTPUT_DIR", "x"], "use --output-dir"),
                                (["--output-dir", str(project)], "is the target itself"),
                                (["-p", "QUICK", "True"], "must not replace the committed results")]:
        with pytest.raises(SystemExit) as exit_info:
            run_notebook.main(["--target", str(project), *arguments])
        assert exit_info.value.code == 2
        assert expected in capsys.readouterr().err
    assert snapshot(project) == before and not (project / "runs").exists()


@pytest.mark.parametrize("text, value", [("False", False), ("3", 3), ("0.5", 0.5), ("None", None),
                                         ("[1, 2]", [1, 2]), ("runs/explore", "runs/explore"), ("abc", "abc")])
def test_parameter_values_are_read_as_python_literals_else_text(text, value):
    assert run_notebook.parse_parameter_value(text) == value


def staged_run(project, names=("model.ipynb", "figures", "saved_models")):
    """A staging folder in project/runs/ holding a new set of results (only the parts named)."""
    staging = project / "runs" / "staged"
    staging.mkdir(parents=True)
    if "model.ipynb" in names:
        (staging / "model.ipynb").write_text("new notebook")
    for folder in {"figures", "saved_models"} & set(names):
        (staging / folder).mkdir()
        (staging / folder / "new_file").write_text("new")
    return staging


def test_swap_that_fails_half_way_puts_the_old_set_back(tmp_path, monkeypatch):
    project = make_project(tmp_path / "project")
    staging = staged_run(project)
    before = snapshot(project)
    real_replace = os.replace

    def replace_failing_on_models(source, destination):
        if source == staging / "saved_models":
            raise OSError("disk full")
        real_replace(source, destination)

    # The old set is already aside and the new notebook and figures are in when moving the models fails.
    monkeypatch.setattr(os, "replace", replace_failing_on_models)
    with pytest.raises(OSError, match="disk full"):
        run_notebook.promote(staging, project)

    assert snapshot(project) == before
    assert (staging / "model.ipynb").read_text() == "new notebook" and (staging / "figures" / "new_file").exists()


def test_incomplete_run_is_not_promoted(tmp_path):
    project = make_project(tmp_path / "project")
    staging = staged_run(project, names=("model.ipynb", "figures"))
    before = snapshot(project)
    with pytest.raises(FileNotFoundError, match="did not write saved_models"):
        run_notebook.promote(staging, project)
    assert snapshot(project) == before


def test_injected_cell_is_dropped_or_keeps_only_the_parameters_given(tmp_path):
    notebook = notebook_of(WRITE_RESULTS_SOURCE)
    injected = nbformat.v4.new_code_cell('# Parameters\nVERSION = "custom"\nOUTPUT_DIR = "runs/staged"\n')
    injected.metadata["tags"] = ["injected-parameters"]
    notebook.cells.insert(1, injected)
    path = tmp_path / "model.ipynb"

    nbformat.write(notebook, path)
    run_notebook.finalize_notebook(path, {})
    final = nbformat.read(path, as_version=4)
    assert injected_cells(final) == [] and [cell.source for cell in final.cells] == [PARAMETERS_SOURCE,
                                                                                      WRITE_RESULTS_SOURCE]

    nbformat.write(notebook, path)
    run_notebook.finalize_notebook(path, {"VERSION": "custom"})
    [kept] = injected_cells(nbformat.read(path, as_version=4))
    assert 'VERSION = "custom"' in kept.source and "OUTPUT_DIR" not in kept.source


def test_readme_update_is_skipped_without_markers_readme_or_for_quick_runs(tmp_path):
    project = make_project(tmp_path / "project")
    (project / "figures" / "metrics.json").write_text('{"run": {"quick": true}, "models": {}}')
    assert "QUICK run" in run_notebook.update_readme(project)
    assert (project / "README.md").read_text() == OLD_README

    (project / "README.md").write_text("# No markers here\n")
    assert "has no <!-- results:start -->" in run_notebook.update_readme(project)
    assert (project / "README.md").read_text() == "# No markers here\n"

    (project / "README.md").unlink()
    assert "no README.md" in run_notebook.update_readme(project)
    assert not (project / "README.md").exists()
