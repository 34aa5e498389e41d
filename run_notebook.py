"""Run model.ipynb with a console a person can read; replace the committed results only when every cell succeeded.

    python run_notebook.py                                      # what `make run` does
    python run_notebook.py --output-dir runs/explore -p TRAIN False   # what `make explore` does

A run executes the notebook with papermill into a fresh staging folder, runs/<timestamp>/, with
the notebook's OUTPUT_DIR parameter pointing there. The console shows one line as each section
starts (the time so far, and the time left as the last run of the same kind took it, from its
figures/metrics.json), one line per training epoch, the key results and, for a failed cell, its
number, section and error. Everything else, every cell's output, papermill's messages and what
the kernel process itself prints (TensorFlow's C++ start-up lines), goes to log.txt in the run's
folder; model summaries and figures stay in the notebook. When the whole notebook succeeded, the
staged model.ipynb, figures/ and saved_models/ replace the committed ones as one set, the
README's results table is rewritten from the new figures/metrics.json, and runs/<timestamp>/
keeps only the log. A failed or interrupted run replaces nothing: it names the failing cell and
leaves the partial notebook and the log in its staging folder.

With --output-dir the notebook runs into that folder, log.txt included, and nothing is ever
replaced: for exploring the analysis from the committed models, and for quick smoke runs.

A run that trains saves each model as soon as it is trained, so an interrupted or failed one can be
continued: --resume runs/<timestamp> executes the whole notebook again into that folder, with the
parameters it started with and RESUME=True, and the notebook loads the models already saved there
instead of training them again. Only the same code may continue a run (run.json in its folder
records the notebook's code cells, the modules and requirements.txt), and the notebook refuses a
model trained on another CPU; a resumed run is promoted like any other when every cell succeeds.

Uses only the standard library and papermill (with nbformat and jupyter_client, which papermill brings).
Exit status: 0 success, 1 a cell failed or the results could not be replaced, 2 a usage error,
128 + the signal number when interrupted (130 for Ctrl-C, 143 for SIGTERM).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import datetime
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import sys
import time
from pathlib import Path

from jupyter_client import AsyncKernelManager
import nbformat
import papermill
from papermill.exceptions import PapermillExecutionError
from papermill.translators import translate_parameters

PROJECT_ROOT = Path(__file__).resolve().parent
NOTEBOOK_NAME = "model.ipynb"
# What one run produces, replaced together so the notebook, figures and models always match.
RESULT_FOLDERS = ("figures", "saved_models")
PROMOTED = (NOTEBOOK_NAME, *RESULT_FOLDERS)
PROMOTED_DESCRIPTION = "model.ipynb, figures/ and saved_models/"
STAGING_PARENT = "runs"  # git-ignored, and inside the target so that moving a folder in is a rename
BACKUP_NAME = "previous"
# Files in the result folders that the notebook does not write (the drawing pad's screenshots come
# from tests/test_pad_browser.py): carried from the old set into the new one, so a run keeps them.
CARRIED_OVER = ("figures/draw_pad.png", "figures/draw_pad_teach.png")
INJECTED_TAG = "injected-parameters"  # papermill's tag for the cell it adds after the parameters cell
ERROR_MARKER_TAG = "papermill-error-cell-tag"  # and for the cells it adds to a failed notebook, pointing at the error
# The README markers that helpers.update_readme_results writes between.
RESULTS_START, RESULTS_END = "<!-- results:start -->", "<!-- results:end -->"


# ==================== Command line ====================================================


def parse_parameter_value(text: str):
    """A `-p NAME VALUE` value as Python: True, 3, 0.5, None, [1, 2], "text"; anything else stays a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # A path or a bare word, as papermill's own -p reads it.


def parse_arguments(argv=None):
    """The command line, checked: the target holds model.ipynb and every -p names one of its parameters."""
    parser = argparse.ArgumentParser(
        prog="run_notebook.py",
        description="Execute model.ipynb with papermill, printing a line as each section starts (with the time left),\n"
                    "one per training epoch and the key results; everything else goes to log.txt in the run's folder.\n"
                    "By default the run goes to a fresh staging folder, runs/<timestamp>/, and only when every cell\n"
                    "succeeded do its model.ipynb, figures/ and saved_models/ replace the committed ones, as one set,\n"
                    "and the README's results table is rewritten. A failed or interrupted run replaces nothing.",
        epilog="examples:\n"
               "  python run_notebook.py                                   # full run, results replaced on success\n"
               "  python run_notebook.py --output-dir runs/explore -p TRAIN False\n"
               "  python run_notebook.py --output-dir /tmp/mnist-quick -p QUICK True\n"
               "  python run_notebook.py --resume runs/2026-12-03T09-40-12   # continue an interrupted run\n\n"
               "exit status: 0 success, 1 a cell failed or the results could not be replaced, 2 a usage error,\n"
               "130 or 143 interrupted (Ctrl-C or SIGTERM)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="set a parameter of the notebook's parameters cell, as papermill's -p does; VALUE is "
                             "read as a Python literal (True, 3, 0.5, None), else kept as text; repeatable")
    parser.add_argument("--output-dir", type=Path, default=None, metavar="DIR",
                        help="run into DIR (created if needed), log.txt included, and stop there: the target's "
                             "model.ipynb, figures/ and saved_models/ are never touched")
    parser.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR",
                        help="continue an interrupted or failed run in RUN_DIR (a runs/<timestamp>/ folder, or an "
                             "--output-dir folder): the notebook runs again there with that run's parameters and loads "
                             "the models it already saved; it needs the same code and the same CPU")
    parser.add_argument("--target", type=Path, default=PROJECT_ROOT, metavar="DIR",
                        help="the project folder holding model.ipynb, figures/, saved_models/ and README.md; the "
                             "notebook runs with DIR as its working directory (default: the folder of this script)")
    arguments = parser.parse_args(argv)

    arguments.target = arguments.target.resolve()
    notebook = arguments.target / NOTEBOOK_NAME
    if not notebook.is_file():
        parser.error(f"{notebook} not found; pass --target the project folder that holds {NOTEBOOK_NAME}.")
    if arguments.output_dir is not None:
        arguments.output_dir = arguments.output_dir.resolve()
        if arguments.output_dir == arguments.target:
            parser.error(f"--output-dir {arguments.output_dir} is the target itself; drop --output-dir to replace "
                         "the committed results safely, or pick another folder.")
    arguments.parameters = {name: parse_parameter_value(value) for name, value in arguments.parameter}
    if arguments.resume is not None:
        try:
            resume_arguments(arguments)
        except ValueError as error:
            parser.error(str(error))
        return arguments
    # The notebook's own rule: a smoke run, or one that trains nothing, never replaces the committed results.
    if arguments.output_dir is None and (arguments.parameters.get("QUICK") is True
                                         or arguments.parameters.get("TRAIN") is False):
        parser.error("a run with -p QUICK True or -p TRAIN False must not replace the committed results; "
                     "add --output-dir DIR (make quick and make explore do).")
    try:
        check_parameters(notebook, arguments.parameters)
    except ValueError as error:
        parser.error(str(error))
    return arguments


def resume_arguments(arguments) -> None:
    """Point --resume's arguments at the run it continues: its folder, its parameters, whether it promotes.

    Raises ValueError, with the fix, for -p or --output-dir beside --resume, a folder without run.json,
    changed code, a run that trains nothing, or a notebook without the RESUME parameter.
    """
    folder = arguments.resume.resolve()
    if arguments.parameter or arguments.output_dir is not None:
        raise ValueError("--resume continues a run with its own parameters and folder; drop -p and --output-dir.")
    try:
        record = json.loads((folder / RUN_RECORD).read_text())
        parameters, code, promotes = record["parameters"], record["code"], record["promote"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{folder / RUN_RECORD} could not be read ({type(error).__name__}: {error}); only a run "
                         "started by run_notebook.py, whose folder holds it, can be resumed: start a new run.") from None
    now = code_fingerprint(arguments.target)
    changed = sorted(name for name in set(code) | set(now) if code.get(name) != now.get(name))
    if changed:
        raise ValueError(f"{', '.join(changed)} changed since the run in {folder} started; a resumed run must run "
                         "the code that trained its models: start a new run (make run).")
    if parameters.get("TRAIN") is False:
        raise ValueError(f"the run in {folder} trains nothing (TRAIN False), so there is nothing to resume: run it again.")
    check_parameters(arguments.target / NOTEBOOK_NAME, {**parameters, "RESUME": True})
    arguments.parameters = parameters
    arguments.output_dir = None if promotes else folder
    arguments.resume = folder


# The record of each run in its folder: its parameters, whether it replaces the committed results, and its code.
RUN_RECORD = "run.json"


def code_fingerprint(target: Path) -> dict:
    """SHA-256 of what the trained models depend on: the notebook's code cells, the modules beside it (all but
    this script) and requirements.txt. A resumed run must find every one unchanged."""
    def digest(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    notebook = nbformat.read(target / NOTEBOOK_NAME, as_version=4)
    code = "\n\0\n".join(cell.source for cell in notebook.cells if cell.cell_type == "code")
    files = [path for path in sorted(target.glob("*.py")) if path.name != Path(__file__).name]
    files += [path for path in [target / "requirements.txt"] if path.is_file()]
    return {NOTEBOOK_NAME: digest(code.encode()), **{path.name: digest(path.read_bytes()) for path in files}}


def notebook_parameters(notebook: Path) -> list:
    """The names the notebook's cell tagged `parameters` assigns, in order."""
    cells = [cell for cell in nbformat.read(notebook, as_version=4).cells
             if "parameters" in cell.get("metadata", {}).get("tags", [])]
    if not cells:
        raise ValueError(f"{notebook} has no cell tagged 'parameters'; tag the cell that sets OUTPUT_DIR and the "
                         "other knobs (View > Cell Toolbar > Tags in Jupyter).")
    try:
        tree = ast.parse(cells[0].source)
    except SyntaxError:
        # IPython syntax (a magic) in the cell: fall back on papermill's line-by-line reading.
        return list(papermill.inspect_notebook(str(notebook)))
    names = []
    for statement in tree.body:
        targets = statement.targets if isinstance(statement, ast.Assign) else (
            [statement.target] if isinstance(statement, ast.AnnAssign) else [])
        names += [target.id for target in targets if isinstance(target, ast.Name)]
    return names


def check_parameters(notebook: Path, parameters: dict) -> None:
    """Refuse parameters that the notebook's parameters cell does not define: a typo would be ignored silently."""
    if "OUTPUT_DIR" in parameters:
        raise ValueError("OUTPUT_DIR is set by run_notebook.py; use --output-dir DIR to run into a folder of your own.")
    known = notebook_parameters(notebook)
    if "OUTPUT_DIR" not in known:
        raise ValueError(f"{notebook} has no OUTPUT_DIR in a cell tagged 'parameters'; add it there, since "
                         "run_notebook.py directs the run's figures/ and saved_models/ with it.")
    unknown = sorted(set(parameters) - set(known))
    if unknown:
        raise ValueError(f"{notebook} has no parameter {', '.join(unknown)} in its parameters cell "
                         f"(it has {', '.join(known)}); fix the name or add it to that cell.")


# ==================== Running the notebook ============================================

LOG_NAME = "log.txt"  # Everything the run printed, beside the notebook it ran into.
# The line helpers.SectionTimer.start prints as each section begins: "── section training · 252 s into the run ──".
SECTION_LINE = re.compile(r"^── section (?P<name>.+?) · .* ──$")
# Which lines of the cells' standard output reach the console; everything goes to the log. Progress: one line
# per training epoch (helpers.EpochLogger) and per tuner trial. Key results: each model's training time and test
# accuracy, the choices made on validation data, the refusal's headline. Notes: the machine, a QUICK or TRAIN=False
# run, and a collection the notebook leaves out ("no ../shared/data/qmnist: ...").
CONSOLE_LINES = re.compile("|".join([
    r"^\s*\S+ epoch +\d+\b", r"^trial +\d+/\d+:",
    r"^\S+: \d+ epochs in \d+ s", r"\btest accuracy\b", r"^best single model", r"^adopted on", r"^MNIST test: kept",
    r"^CPU: ", r"^QUICK run: ", r"^TRAIN = False: ", r"^no [^:]+: ", r"^generated digits: ",
]))
ANSI_CODE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# The parameters that make a run of another kind, with other section times: compared with metrics.json's "run".
RUN_KIND_PARAMETERS = ("QUICK", "TRAIN")


def about(seconds: float) -> str:
    """A rough duration for an estimate: 'under a minute', 'about 12 min', 'about 1 h 20 min'."""
    minutes = round(seconds / 60)
    if minutes < 1:
        return "under a minute"
    hours, minutes = divmod(minutes, 60)
    return f"about {hours} h {minutes} min" if hours else f"about {minutes} min"


def last_run_section_seconds(metrics_path: Path, parameters: dict):
    """Each section's seconds in the last run of the same kind (QUICK, TRAIN) recorded in metrics_path, else None."""
    try:
        run = json.loads(metrics_path.read_text())["run"]
        seconds = {str(name): float(value) for name, value in run["section_seconds"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    same_kind = all(run.get(name.lower()) == parameters[name]
                    for name in RUN_KIND_PARAMETERS if name in parameters and name.lower() in run)
    return seconds if same_kind and seconds else None


class Console:
    """What a person watching the run reads: one line per section with the time left, epochs, key results.

    The cells' standard output arrives in pieces (papermill's stdout_file); complete lines are
    matched against SECTION_LINE and CONSOLE_LINES, and the rest is left to the log.
    """

    def __init__(self, last_sections=None, out=None, clock=time.perf_counter):
        self.last_sections, self.out, self.clock = last_sections, out or sys.stdout, clock
        self.started = clock()
        self.seen, self.pending = [], ""

    # papermill writes the cells' standard output here, as it arrives.
    def write(self, text: str) -> int:
        lines = (self.pending + text).replace("\r", "\n").split("\n")
        self.pending = lines.pop()
        for line in lines:
            self.line(line)
        return len(text)

    def flush(self) -> None:
        pass

    def line(self, line: str) -> None:
        line = ANSI_CODE.sub("", line).rstrip()
        match = SECTION_LINE.match(line)
        if match:
            self.show(self.section_line(match["name"]))
        elif CONSOLE_LINES.search(line):
            self.show(line)

    def show(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def section_line(self, name: str) -> str:
        """'[12:03] training (3/19) starts · 8 min 10 s so far · about 61 min left (last run's times)'."""
        if name not in self.seen:
            self.seen.append(name)
        number = self.seen.index(name) + 1
        so_far = self.clock() - self.started
        if self.last_sections is None:
            position, left = f"{number}", "no estimate yet"
        else:
            total = len(set(self.last_sections) | set(self.seen))
            done = set(self.seen[:number - 1])
            left_seconds = sum(seconds for section, seconds in self.last_sections.items() if section not in done)
            position, left = f"{number}/{total}", f"{about(left_seconds)} left (last run's times)"
        return (f"[{datetime.datetime.now():%H:%M}] {name} ({position}) starts · {duration(so_far)} so far · {left}")


class _LogFile(logging.Handler):
    """Writes every papermill message and every piece of cell output, as it comes, to the run's log file."""

    def __init__(self, log):
        super().__init__()
        self.log = log

    def emit(self, record):
        try:
            message = ANSI_CODE.sub("", self.format(record))  # A model summary's colours, unreadable in a file.
            self.log.write(message if message.endswith("\n") else message + "\n")
            self.log.flush()
        except Exception:
            self.handleError(record)


def log_to(log) -> _LogFile:
    """Send papermill's log (its messages, and the cells' output with log_output=True) to log and nowhere else."""
    handler = _LogFile(log)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("papermill")
    for earlier in [earlier for earlier in logger.handlers if isinstance(earlier, _LogFile)]:
        logger.removeHandler(earlier)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return handler


def kernel_manager_writing_to(log):
    """A kernel manager whose kernel writes what C++ libraries print straight into log, not into the cells.

    TensorFlow's C++ lines (absl's "All log messages before absl::InitializeLog()", oneDNN's
    notice, "failed call to cuInit", NodeDef warnings) are written by the kernel process to its
    own stdout and stderr, before any log level applies. By default ipykernel copies them both
    into the cell's output and onto the terminal; here they go once, into the log, and the
    notebook keeps only what Python printed.
    """

    class KernelManagerWithLog(AsyncKernelManager):
        async def start_kernel(self, **kwargs):
            kwargs["extra_arguments"] = [*(kwargs.get("extra_arguments") or []),
                                         "--IPKernelApp.capture_fd_output=False"]
            kwargs.setdefault("stdout", log)
            kwargs.setdefault("stderr", log)
            return await super().start_kernel(**kwargs)

    return KernelManagerWithLog


def new_staging_folder(target: Path) -> Path:
    """A new, empty runs/<timestamp>/ folder inside the target (with a suffix if that second is taken)."""
    parent = target / STAGING_PARENT
    parent.mkdir(exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y-%m-%dT%H-%M-%S")
    for attempt in range(1, 100):
        folder = parent / (stamp if attempt == 1 else f"{stamp}-{attempt}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise FileExistsError(f"{parent}: could not create a new staging folder for {stamp}; remove old runs there.")


def notebook_path_parameter(folder: Path, target: Path) -> str:
    """OUTPUT_DIR as the notebook should see it: relative to the target (its working directory) when inside it."""
    try:
        return folder.relative_to(target).as_posix()
    except ValueError:
        return str(folder)


def execute(target: Path, output_notebook: Path, output_dir: Path, parameters: dict, console: Console, log) -> None:
    """Execute the target's notebook into output_notebook: the cells' standard output to console, everything to log.

    Raises papermill's PapermillExecutionError when a cell fails; the notebook executed so far,
    with the traceback, is then in output_notebook.
    """
    log_to(log)
    try:
        papermill.execute_notebook(
            str(target / NOTEBOOK_NAME),
            str(output_notebook),
            parameters={**parameters, "OUTPUT_DIR": notebook_path_parameter(output_dir, target)},
            cwd=str(target),
            log_output=True,  # Every output, papermill's "Executing Cell N" and the figures' text, into the log.
            stdout_file=console,  # The cells' standard output, which the console sifts.
            progress_bar=False,  # The section lines are the progress.
            kernel_manager_class=kernel_manager_writing_to(log),
        )
    finally:
        console.write("\n")  # A last line without its newline.


# ==================== Replacing the committed results =================================


def finalize_notebook(path: Path, parameters: dict) -> None:
    """Drop papermill's injected-parameters cell from an executed notebook, so it shows its own parameters cell.

    The injected OUTPUT_DIR only pointed the run at its staging folder. Parameters given with -p
    did change the run, so when there are any, the injected cell stays with just those.
    """
    notebook = nbformat.read(path, as_version=4)
    kept = []
    for cell in notebook.cells:
        if INJECTED_TAG in cell.get("metadata", {}).get("tags", []):
            if not parameters:
                continue
            kernelspec = notebook.metadata.get("kernelspec", {})
            cell.source = translate_parameters(kernelspec.get("name"), kernelspec.get("language"), parameters,
                                               "Parameters")
        kept.append(cell)
    notebook.cells = kept
    notebook.metadata.get("papermill", {}).get("parameters", {}).pop("OUTPUT_DIR", None)
    nbformat.write(notebook, path)


def check_staged_set(staging: Path) -> None:
    """Refuse to promote a run that did not write all of model.ipynb, figures/ and saved_models/."""
    missing = [name for name in PROMOTED if not (staging / name).exists()]
    if missing:
        raise FileNotFoundError(
            f"{staging}: the run did not write {', '.join(missing)}; the notebook must write figures/ and "
            "saved_models/ under OUTPUT_DIR. Nothing was replaced.")


def _move_back(moves: list, problems: list) -> None:
    """Undo renames (source, destination) in reverse order, noting any that fail instead of stopping."""
    for source, destination in reversed(moves):
        try:
            os.replace(destination, source)
        except OSError as error:
            problems.append(f"{destination} -> {source}: {error}")


def promote(staging: Path, target: Path) -> None:
    """Replace the target's model.ipynb, figures/ and saved_models/ with the staged ones, as one set.

    The old set is first moved aside into staging/previous/, then the new one is moved in, then
    the old one is deleted. If a move fails, every move made so far is undone, so the target
    holds either the whole old set or the whole new one. Each move is a rename within one file
    system (the staging folder is inside the target), so the swap takes milliseconds.
    """
    check_staged_set(staging)
    for name in CARRIED_OVER:
        if (target / name).is_file() and not (staging / name).exists():
            shutil.copy2(target / name, staging / name)
    backup = staging / BACKUP_NAME
    backup.mkdir()
    moves = []
    try:
        for name in PROMOTED:
            if os.path.lexists(target / name):
                os.replace(target / name, backup / name)
                moves.append((target / name, backup / name))
        for name in PROMOTED:
            os.replace(staging / name, target / name)
            moves.append((staging / name, target / name))
    except BaseException:
        problems = []
        _move_back(moves, problems)
        if problems:
            raise OSError(f"replacing the results in {target} failed and could not be fully undone "
                          f"({'; '.join(problems)}); the previous results are in {backup}: move them back by hand.")
        raise
    # The swap is done; a backup that cannot be deleted is only clutter in runs/.
    shutil.rmtree(backup, ignore_errors=True)


def update_readme(target: Path, log) -> str:
    """Rewrite the README's results table from the promoted figures/metrics.json; returns what was done."""
    readme, metrics_path = target / "README.md", target / "figures" / "metrics.json"
    if not readme.is_file():
        return f"no {readme.name} in {shown(target)}/: no results table to update."
    text = readme.read_text()
    if RESULTS_START not in text or RESULTS_END not in text:
        return f"{shown(readme)} has no {RESULTS_START} ... {RESULTS_END} markers: results table not updated."
    if not metrics_path.is_file():
        return f"{shown(metrics_path)} was not written by the run: README results table not updated."
    metrics = json.loads(metrics_path.read_text())
    if metrics.get("run", {}).get("quick"):
        return "a QUICK run says nothing about the models: README results table left as it was."
    # Imported here, not at the top: helpers loads TensorFlow, which only this step needs. Its C++ start-up lines
    # (absl, the CUDA probe) are printed whatever TF_CPP_MIN_LOG_LEVEL says: they go to the log, not the console.
    with native_output_into(log):
        import helpers

    helpers.update_readme_results(readme, metrics, start=RESULTS_START, end=RESULTS_END)
    return f"{shown(readme)}: results table rewritten from {shown(metrics_path)}."


@contextlib.contextmanager
def native_output_into(log):
    """Send what C++ code writes to this process's stdout and stderr into log for the duration."""
    sys.stdout.flush()
    sys.stderr.flush()
    log.flush()
    saved = {descriptor: os.dup(descriptor) for descriptor in (1, 2)}
    try:
        for descriptor in saved:
            os.dup2(log.fileno(), descriptor)
        yield
    finally:
        for descriptor, copy in saved.items():
            os.dup2(copy, descriptor)
            os.close(copy)


# ==================== Main ============================================================


class _Signals:
    """SIGINT and SIGTERM handling: stop the run while it executes, but never half-way through the swap."""

    def __init__(self):
        self.received = None
        self.previous = {}

    def interrupt(self, signum, frame):
        self.received = signum
        raise KeyboardInterrupt

    def remember(self, signum, frame):
        self.received = signum

    def install(self, handler) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self.previous.setdefault(signum, signal.getsignal(signum))
            signal.signal(signum, handler)

    def restore(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    @property
    def exit_status(self) -> int:
        return 128 + (self.received or signal.SIGINT)

    @property
    def name(self) -> str:
        return signal.Signals(self.received or signal.SIGINT).name


def shown(path: Path) -> str:
    """A path as the user can type it: relative to the current folder when inside it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes} min {seconds} s" if minutes else f"{seconds} s"


def partial_notebook_note(path: Path) -> str:
    return f" The partial notebook is {shown(path)}." if path.is_file() else ""


def section_of_cell(notebook: Path, cell_index: int):
    """The title of the last markdown heading above cell_index in notebook ('9. Error analysis'), else None."""
    try:
        cells = nbformat.read(notebook, as_version=4).cells
    except Exception:  # A partial notebook that cannot be read only costs the section's name.
        return None
    # papermill numbers the cells before it adds its own cells that point at the error.
    cells = [cell for cell in cells if ERROR_MARKER_TAG not in cell.get("metadata", {}).get("tags", [])][:cell_index]
    for cell in reversed(cells):
        headings = [line for line in cell.source.splitlines() if line.startswith("#")] if (
            cell.cell_type == "markdown") else []
        if headings:
            return headings[-1].lstrip("#").strip()
    return None


def failure_message(error: PapermillExecutionError, partial_notebook: Path, log_path: Path,
                    nothing_touched: str) -> str:
    """One message naming the failed cell (number, section, first line), its error, the partial notebook and the log."""
    first_line = next((line.strip() for line in error.source.splitlines() if line.strip()), "")
    section = section_of_cell(partial_notebook, error.cell_index)
    where = f"In [{error.exec_count}], " + (f"section '{section}', " if section else "")
    evalue = next((line for line in str(error.evalue).splitlines() if line.strip()), "")
    return (f"run_notebook.py: {NOTEBOOK_NAME} failed in cell {error.cell_index + 1} "
            f"({where}starting `{first_line}`): {error.ename}: {evalue}\n"
            f"The partial notebook, with the traceback, is {shown(partial_notebook)}; everything the run printed is in "
            f"{shown(log_path)}. {nothing_touched}")


def parameters_in_effect(notebook: Path, parameters: dict) -> dict:
    """The notebook's parameters as this run sets them: the parameters cell's values, with the -p values over them."""
    defaults = papermill.inspect_notebook(str(notebook))
    return {**{name: parse_parameter_value(entry["default"]) for name, entry in defaults.items()}, **parameters}


def tell(message: str, log, file=None) -> None:
    """Print a message of run_notebook.py's own to the console (stdout unless file says), and into the log."""
    print(message, file=file or sys.stdout, flush=True)
    message = message.lstrip("\n")
    log.write(("" if message.startswith("run_notebook.py") else "run_notebook.py: ") + message + "\n")
    log.flush()


def main(argv=None) -> int:
    arguments = parse_arguments(argv)
    # Before the kernel starts and before helpers loads TensorFlow, or its C++ logging is already configured.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    signals = _Signals()
    try:
        return run(arguments, signals)
    finally:
        signals.restore()


def run(arguments, signals: _Signals) -> int:
    """Execute the notebook, then promote its results unless --output-dir was given; returns the exit status."""
    target, promote_results = arguments.target, arguments.output_dir is None
    if promote_results:
        output_dir = arguments.resume or new_staging_folder(target)
        nothing_touched = f"The committed {PROMOTED_DESCRIPTION} were not touched."
        plan = "they replace the committed results only if every cell succeeds"
        metrics_path = target / "figures" / "metrics.json"
    else:
        output_dir = arguments.output_dir
        output_dir.mkdir(parents=True, exist_ok=True)
        nothing_touched = "Nothing committed was touched."
        plan = "nothing committed is touched"
        # The last run into this folder, read before this one overwrites it.
        metrics_path = output_dir / "figures" / "metrics.json"
    output_notebook, log_path = output_dir / NOTEBOOK_NAME, output_dir / LOG_NAME
    last_sections = last_run_section_seconds(
        metrics_path, parameters_in_effect(target / NOTEBOOK_NAME, arguments.parameters))
    if arguments.resume is None:
        log_path.write_text("")
        (output_dir / RUN_RECORD).write_text(json.dumps(
            {"parameters": arguments.parameters, "promote": promote_results, "code": code_fingerprint(target)}, indent=1))
    # Appending, so that this process and the kernel, which writes into the same file, never overwrite each other.
    with open(log_path, "a", buffering=1) as log:
        if arguments.resume is not None:
            tell(f"\nResuming the run in {shown(output_dir)}/ with its parameters: the models it saved are loaded, the "
                 f"rest is trained and run ({plan}); everything it prints goes to {shown(log_path)}.", log)
        else:
            tell(f"Running {shown(target / NOTEBOOK_NAME)} into {shown(output_dir)}/ ({plan}); everything it prints "
                 f"goes to {shown(log_path)}.", log)
        if last_sections is None:
            tell(f"No earlier run of this kind in {shown(metrics_path)}: no estimate of the time left yet.", log)
        else:
            tell(f"Time left is estimated from the sections of the last run of this kind ({shown(metrics_path)}, "
                 f"{duration(sum(last_sections.values()))} in all).", log)
        return run_logged(arguments, signals, output_dir, output_notebook, log, log_path, last_sections,
                          nothing_touched)


def run_logged(arguments, signals, output_dir, output_notebook, log, log_path, last_sections, nothing_touched) -> int:
    """run()'s work once the log is open: execute, then promote unless --output-dir was given."""
    target, promote_results = arguments.target, arguments.output_dir is None
    console = Console(last_sections)
    signals.install(signals.interrupt)
    started = time.perf_counter()
    parameters = {**arguments.parameters, **({"RESUME": True} if arguments.resume is not None else {})}
    # What a failed or interrupted run that trains can do next.
    resumable = "" if parameters.get("TRAIN") is False else (
        f" Continue it with `python run_notebook.py --resume {shown(output_dir)}` (same code, same CPU): the models "
        "it saved are loaded, not trained again.")
    try:
        execute(target, output_notebook, output_dir, parameters, console, log)
        # From here on a signal waits until the results are replaced, so the target never holds half of each.
        signals.install(signals.remember)
    except PapermillExecutionError as error:
        log.write(ANSI_CODE.sub("", "\n".join(error.traceback)) + "\n")
        tell(failure_message(error, output_notebook, log_path, nothing_touched) + resumable, log, sys.stderr)
        tell(f"Failed after {duration(time.perf_counter() - started)}.", log, sys.stderr)
        return 1
    except KeyboardInterrupt:
        tell(f"\nrun_notebook.py: interrupted ({signals.name}) after {duration(time.perf_counter() - started)}. "
             f"{nothing_touched}{partial_notebook_note(output_notebook)} The log is {shown(log_path)}.{resumable}",
             log, sys.stderr)
        return signals.exit_status
    except Exception as error:  # The kernel died or would not start: no cell to blame.
        tell(f"run_notebook.py: the run stopped after {duration(time.perf_counter() - started)}: "
             f"{type(error).__name__}: {error}\n{nothing_touched}{partial_notebook_note(output_notebook)} "
             f"The log is {shown(log_path)}.{resumable}", log, sys.stderr)
        return 1
    elapsed = time.perf_counter() - started
    last_run = "" if last_sections is None else f" (the last run of this kind: {duration(sum(last_sections.values()))})"

    if not promote_results:
        tell(f"Done in {duration(elapsed)}{last_run}: {shown(output_notebook)}, and what it wrote, in "
             f"{shown(output_dir)}/; the log is {shown(log_path)}. {nothing_touched}", log)
        return 0

    try:
        finalize_notebook(output_notebook, arguments.parameters)
        promote(output_dir, target)
    except (OSError, ValueError) as error:
        tell(f"run_notebook.py: every cell succeeded, but the results were not replaced: {error}\n"
             f"The run is in {shown(output_dir)}/.", log, sys.stderr)
        return 1
    # The staged set has moved into the target; what is left there (scratch files) goes too, all but the log.
    for leftover in output_dir.iterdir():
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        elif leftover != log_path:
            leftover.unlink(missing_ok=True)
    status = 0
    try:
        tell(update_readme(target, log), log)
    except Exception as error:  # The results are in place; only the README table is behind.
        tell(f"run_notebook.py: the new results are in place, but {shown(target / 'README.md')} was not "
             f"updated: {type(error).__name__}: {error}\nFix that, then rewrite only the table with: python -c "
             "\"import json, helpers; helpers.update_readme_results('README.md', "
             "json.load(open('figures/metrics.json')))\"", log, sys.stderr)
        status = 1
    tell(f"Done in {duration(elapsed)}{last_run}: {PROMOTED_DESCRIPTION} in {shown(target)}/ replaced by this run's; "
         f"the log is {shown(log_path)}.", log)
    if signals.received is not None:
        tell(f"run_notebook.py: {signals.name} arrived while the results were being replaced; they were "
             "replaced in full first.", log, sys.stderr)
        return signals.exit_status
    return status


if __name__ == "__main__":
    sys.exit(main())
