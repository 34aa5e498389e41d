"""run_notebook.py on tiny stand-in projects: a successful run replaces the results as one set; a failed,
interrupted or incomplete one replaces nothing and can be resumed with the same code; --output-dir never
touches the target; the console shows sections with the time left, epochs, results and a failed cell, and
the log holds everything.

The real model.ipynb is never executed here: each test writes a notebook of a few cells that
writes figures/ and saved_models/ under OUTPUT_DIR the way model.ipynb does.
"""

import hashlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import time

import nbformat
import pytest

import run_notebook
from conftest import PROJECT_ROOT

SCRIPT = PROJECT_ROOT / "run_notebook.py"
PARAMETERS_SOURCE = 'OUTPUT_DIR = "."\nVERSION = "new"\nRESUME = False'
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
# The first model of a run: trained and saved, then the run stops; resumed, it loads the saved one.
SITTINGS_SOURCE = """\
import pathlib
models = pathlib.Path(OUTPUT_DIR) / "saved_models"
models.mkdir(parents=True, exist_ok=True)
first = models / "first.keras"
if RESUME:
    print("first: loaded, trained before the interruption as", first.read_text())
else:
    first.write_text(VERSION)
    raise ValueError("stopped on purpose after the first model")"""
OLD_README = "# Fake project\n\n<!-- results:start -->\nold table\n<!-- results:end -->\n\nThe end.\n"


class Markdown(str):
    """A source that notebook_of makes a markdown cell."""


def notebook_of(*sources):
    """A notebook whose first cell is the parameters cell, then one cell per source (code unless Markdown)."""
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    parameters = nbformat.v4.new_code_cell(PARAMETERS_SOURCE)
    parameters.metadata["tags"] = ["parameters"]
    notebook.cells = [parameters] + [nbformat.v4.new_markdown_cell(source) if isinstance(source, Markdown)
                                     else nbformat.v4.new_code_cell(source) for source in sources]
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
    # Rewriting the README's table loads TensorFlow in this process: its C++ start-up lines stay off the console.
    assert "absl" not in result.stdout + result.stderr and "cuda" not in (result.stdout + result.stderr).lower()

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
    # Of the staging folder only the run's log is left, and no backup of the old set.
    [log] = (project / "runs").glob("*/*")
    assert log.name == "log.txt" and "tiny epoch 1/1 done" in log.read_text()
    assert f"the log is {log.relative_to(tmp_path)}." in result.stdout


def test_failed_run_changes_nothing_and_names_the_failing_cell(tmp_path):
    project = make_project(tmp_path / "project", WRITE_RESULTS_SOURCE, FAILING_SOURCE)
    before = snapshot(project)
    result = run_script(project)

    assert result.returncode == 1
    assert snapshot(project) == before
    [partial] = (project / "runs").glob("*/model.ipynb")
    assert "failed in cell 4 (In [4], starting `raise ValueError(\"broken on purpose\")`)" in result.stderr
    assert "ValueError: broken on purpose" in result.stderr
    assert (f"The partial notebook, with the traceback, is {partial.relative_to(tmp_path)}; everything the run "
            f"printed is in {(partial.parent / 'log.txt').relative_to(tmp_path)}.") in result.stderr
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
    with open(tmp_path / "log.txt", "w") as log:
        (project / "figures" / "metrics.json").write_text('{"run": {"quick": true}, "models": {}}')
        assert "QUICK run" in run_notebook.update_readme(project, log)
        assert (project / "README.md").read_text() == OLD_README

        (project / "README.md").write_text("# No markers here\n")
        assert "has no <!-- results:start -->" in run_notebook.update_readme(project, log)
        assert (project / "README.md").read_text() == "# No markers here\n"

        (project / "README.md").unlink()
        assert "no README.md" in run_notebook.update_readme(project, log)
        assert not (project / "README.md").exists()


# ==================== The console and the log ===========================================

# A cell that prints what a notebook section prints: the section timer's line, an epoch, a result, and noise
# of every kind the console must leave to the log.
NOISY_SOURCE = r'''
import os, sys
print("── section training · 3 s into the run ──")
print("           tiny epoch  1/2  loss 0.5000  accuracy 0.9000  lr 1.00e-03    1.0 s")
print("tiny: 2 epochs in 2 s (3 CPU-s)")
print("\x1b[1mModel: \"tiny\"\x1b[0m and its summary")
print("a line of detail that only the log holds")
print("stderr of the cell", file=sys.stderr)
os.write(2, b"E0000 00:00:1796188999.356752 12571 cuda_platform.cc:52] failed call to cuInit\n")
sys.stdout.flush()


class Figure:
    def __repr__(self):
        return "<Figure size 640x480 with 1 Axes>"


Figure()'''
RESULT_SOURCE = """\
print("── section evaluation · 5 s into the run ──")
print("          tiny: test accuracy 50.00%")"""


def metrics_with_sections(path, sections, **run):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"run": {"section_seconds": sections, **run}}))


def test_section_line_estimates_the_time_left_from_the_last_run():
    clock = iter([0.0, 250.0, 400.0])
    out = io.StringIO()
    console = run_notebook.Console({"setup": 1.0, "training": 1500.0, "evaluation": 300.0}, out=out,
                                   clock=lambda: next(clock))
    console.write("── section training · 3 s into the run ──\n")
    console.write("── section evaluation · 150 s into the run ──\n")
    training, evaluation = out.getvalue().splitlines()
    # The time left counts the section starting now and every one not started yet, as long as they took last time.
    assert training.endswith("training (1/3) starts · 4 min 10 s so far · about 30 min left (last run's times)")
    assert evaluation.endswith("evaluation (2/3) starts · 6 min 40 s so far · about 5 min left (last run's times)")
    assert re.match(r"\[\d\d:\d\d\] ", training)

    out = io.StringIO()
    run_notebook.Console(None, out=out).write("── section training · 3 s into the run ──\n")
    assert out.getvalue().rstrip().endswith("training (1) starts · 0 s so far · no estimate yet")


def test_time_left_comes_only_from_a_run_of_the_same_kind(tmp_path):
    metrics = tmp_path / "figures" / "metrics.json"
    assert run_notebook.last_run_section_seconds(metrics, {"QUICK": False}) is None  # No earlier run.
    metrics_with_sections(metrics, {"setup": 1.0, "training": 400.0}, quick=False, train=False)
    assert run_notebook.last_run_section_seconds(metrics, {"QUICK": False, "TRAIN": False}) == {"setup": 1.0,
                                                                                               "training": 400.0}
    assert run_notebook.last_run_section_seconds(metrics, {"QUICK": False, "TRAIN": True}) is None
    metrics.write_text("not json")
    assert run_notebook.last_run_section_seconds(metrics, {}) is None


def test_console_keeps_sections_epochs_and_results_and_drops_the_rest():
    out = io.StringIO()
    console = run_notebook.Console(None, out=out)
    for piece in ["── section data · 1 s into the run ──\nExecuting Cell 3---\n",
                  "<Figure size 640x480 with 1 Axes>\n", "\x1b[1mModel: \"dnn\"\x1b[0m\n",
                  "WARNING: All log messages before absl::InitializeLog() is called\n",
                  "           dnn epoch  1/15  loss 0.3", "000  lr 1.00e-03\n\n", "train images (60000, 28, 28)\n",
                  "           dnn: test accuracy 97.84%  test loss 0.0727  errors 216\n",
                  "no ../shared/data/qmnist: the per-writer view is skipped\n"]:
        console.write(piece)
    lines = out.getvalue().splitlines()
    assert len(lines) == 4 and lines[0].endswith("data (1) starts · 0 s so far · no estimate yet")
    assert lines[1:] == ["           dnn epoch  1/15  loss 0.3000  lr 1.00e-03",
                         "           dnn: test accuracy 97.84%  test loss 0.0727  errors 216",
                         "no ../shared/data/qmnist: the per-writer view is skipped"]


def test_section_timer_prints_the_line_the_console_reads(capsys):
    import helpers  # Loads TensorFlow: only this test needs it.

    helpers.SectionTimer().start("error_analysis")
    [line] = capsys.readouterr().out.splitlines()
    assert run_notebook.SECTION_LINE.match(line)["name"] == "error_analysis"


def test_console_shows_sections_epochs_and_results_and_the_log_holds_everything(tmp_path):
    project = make_project(tmp_path / "project", WRITE_RESULTS_SOURCE, NOISY_SOURCE, RESULT_SOURCE)
    explore = tmp_path / "explore"
    metrics_with_sections(explore / "figures" / "metrics.json", {"setup": 1.0, "training": 600.0, "evaluation": 60.0})
    result = run_script(project, "--output-dir", str(explore))
    assert result.returncode == 0, result.stderr

    lines = result.stdout.splitlines()
    assert lines[0] == ("Running project/model.ipynb into explore/ (nothing committed is touched); everything it "
                        "prints goes to explore/log.txt.")
    assert lines[1] == ("Time left is estimated from the sections of the last run of this kind "
                        "(explore/figures/metrics.json, 11 min 1 s in all).")
    assert lines[2] == "tiny epoch 1/1 done"
    assert re.search(r"^\[\d\d:\d\d\] training \(1/3\) starts · \d+ s so far · about 11 min left "
                     r"\(last run's times\)$", lines[3])
    assert [line.strip() for line in lines[4:6]] == [
        "tiny epoch  1/2  loss 0.5000  accuracy 0.9000  lr 1.00e-03    1.0 s", "tiny: 2 epochs in 2 s (3 CPU-s)"]
    assert re.search(r"evaluation \(2/3\) starts · \d+ s so far · about 1 min left", lines[6])
    assert lines[7].strip() == "tiny: test accuracy 50.00%"
    assert lines[8].startswith("Done in ") and lines[8].endswith(
        "the log is explore/log.txt. Nothing committed was touched.") and len(lines) == 9
    assert result.stderr == ""

    log = (explore / "log.txt").read_text()
    for everything in ["Executing Cell 3", "Model: \"tiny\" and its summary",
                       "a line of detail that only the log holds", "stderr of the cell", "failed call to cuInit",
                       "<Figure size 640x480 with 1 Axes>", "tiny: test accuracy 50.00%", "Done in "]:
        assert everything in log
    # What C++ code writes in the kernel goes to the log only, not into the notebook.
    outputs = [output for cell in nbformat.read(explore / "model.ipynb", as_version=4).cells
               for output in cell.get("outputs", [])]
    assert "stderr of the cell" in str(outputs) and "cuInit" not in str(outputs)


def test_failed_cell_is_named_with_its_section_and_error_and_the_log_holds_the_traceback(tmp_path):
    project = make_project(tmp_path / "project", WRITE_RESULTS_SOURCE, Markdown("## 9. Error analysis\n\nProse."),
                           'plot_writer_accuracy = None\nraise ValueError("no writers\\nsecond line")')
    result = run_script(project, "--output-dir", str(tmp_path / "explore"))

    assert result.returncode == 1
    assert ("model.ipynb failed in cell 5 (In [4], section '9. Error analysis', starting "
            "`plot_writer_accuracy = None`): ValueError: no writers\n") in result.stderr
    assert "everything the run printed is in explore/log.txt" in result.stderr
    log = (tmp_path / "explore" / "log.txt").read_text()
    traceback = log.split("Ending Cell 5")[-1]
    assert "Traceback" in traceback and 'raise ValueError("no writers' in traceback and "second line" in traceback


@pytest.mark.slow
@pytest.mark.parametrize("parameters", [[], ["-p", "VERSION", "custom"]])
def test_failed_run_resumes_with_its_parameters_and_keeps_what_it_saved(tmp_path, parameters):
    project = make_project(tmp_path / "project", SITTINGS_SOURCE, WRITE_RESULTS_SOURCE)
    before = snapshot(project)
    first = run_script(project, *parameters)
    assert first.returncode == 1 and snapshot(project) == before
    [staging] = (project / "runs").iterdir()
    assert f"Continue it with `python run_notebook.py --resume {staging.relative_to(tmp_path)}`" in first.stderr

    resumed = run_script(project, "--resume", str(staging))
    assert resumed.returncode == 0, resumed.stderr
    version = "custom" if parameters else "new"
    # The model of the first sitting was kept, the rest trained with the same parameters, and all promoted.
    assert (project / "saved_models" / "first.keras").read_text() == version
    assert (project / "saved_models" / "tiny.keras").read_text() == version
    notebook = nbformat.read(project / "model.ipynb", as_version=4)
    assert f"trained before the interruption as {version}" in notebook.cells[-2].outputs[0].text
    # RESUME only steered this run: the notebook shows the parameters the run was started with.
    injected = "".join(cell.source for cell in injected_cells(notebook))
    assert "RESUME" not in injected and ('VERSION = "custom"' in injected) == bool(parameters)
    log = (staging / "log.txt").read_text()
    assert "stopped on purpose" in log and "Resuming the run in" in log
    assert sorted(path.name for path in staging.iterdir()) == ["log.txt"]


def test_resume_is_refused_with_other_code_parameters_or_no_run_record(tmp_path, capsys):
    project = make_project(tmp_path / "project", SITTINGS_SOURCE, WRITE_RESULTS_SOURCE)
    assert run_script(project).returncode == 1
    [staging] = (project / "runs").iterdir()
    changed = notebook_of(SITTINGS_SOURCE, WRITE_RESULTS_SOURCE.replace("tiny", "other"))
    nbformat.write(changed, project / "model.ipynb")
    (project / "helpers.py").write_text("# a module the notebook would import")
    for arguments, expected in [(["--resume", str(staging)], "helpers.py, model.ipynb changed since the run in"),
                                (["--resume", str(staging), "-p", "VERSION", "x"], "drop -p and --output-dir"),
                                (["--resume", str(project)], "run.json could not be read")]:
        with pytest.raises(SystemExit) as exit_info:
            run_notebook.main(["--target", str(project), *arguments])
        assert exit_info.value.code == 2
        assert expected in capsys.readouterr().err
    assert sorted(path.name for path in staging.iterdir()) == ["log.txt", "model.ipynb", "run.json", "saved_models"]
