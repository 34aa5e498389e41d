"""Executes model.ipynb on real MNIST into temporary folders: a QUICK run on a small slice; the run resumed from
part of its models (as an interrupted run leaves them), which must retrain the rest to the same numbers (same seed,
same numbers); and a run without training from the quick run's models, on a machine without the shared data.
The committed models must give the committed numbers on the full test set.

A notebook run keeps about 1.1 of the 2 cores busy (plots, papermill and small batches leave the rest idle), so
work that does not depend on it goes beside it: the quick run starts in a process of its own when the module
starts, while the committed models are measured, and the run without training goes beside the resumed run.
"""

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import PROJECT_ROOT

# Every figure the notebook saves; the README embeds some of them by these names.
EXPECTED_FIGURES = [
    "class_balance", "sample_digits", "history_dnn", "history_cnn_basic", "history_cnn_optimized",
    "validation_curves", "sample_predictions", "confusion_matrices", "test_accuracy", "test_loss",
    "misclassified", "classification_report", "confusion_matrix_best_normalized", "robustness",
    "cross_dataset_examples", "cross_dataset_accuracy", "augmentation_examples", "tuner_trials",
    "history_cnn_augmented", "history_resnet", "history_resnet_seed2", "history_resnet_seed3", "history_cnn_tuned",
    "validation_curves_beyond", "reliability_diagrams", "non_digit_examples", "refusal_scores", "refused_non_digits",
    "draw_pad_example", "draw_pad_scribble", "adversarial", "adversarial_examples", "first_layer_filters",
    "feature_maps", "saliency", "embedding", "generator_history", "generated_digits", "generated_interpolation",
    "generated_low_label",
]
# Drawn only when the shared data is beside the project: who wrote each digit, and the pen digits.
SHARED_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
WRITER_FIGURES = ["accuracy_by_writer", "worst_writers"]
PEN_FIGURES = ["pen_writers", "adaptation", "adaptation_changes"]
BASELINE_MODELS = ["dnn", "cnn_basic", "cnn_optimized"]
NEW_MODELS = ["cnn_augmented", "resnet", "resnet_seed2", "resnet_seed3", "cnn_tuned"]
OUTLIER_EXPOSURE_MODELS = ["resnet_oe", "resnet_seed2_oe", "resnet_seed3_oe"]


pytestmark = pytest.mark.slow


# The same papermill call, for a run in a process of its own: argv[1] the output folder, argv[2] the parameters.
BACKGROUND_RUN = """
import json, sys, papermill
papermill.execute_notebook(sys.argv[3], sys.argv[1] + "/model.ipynb", parameters=json.loads(sys.argv[2]),
                           cwd=sys.argv[4], kernel_name="python3", progress_bar=False)
"""


def run_notebook(output_dir, **parameters):
    """Execute model.ipynb with papermill, writing under `output_dir`; returns the metrics it wrote."""
    papermill = pytest.importorskip("papermill")
    papermill.execute_notebook(
        str(PROJECT_ROOT / "model.ipynb"),
        str(output_dir / "model.ipynb"),
        parameters={"OUTPUT_DIR": str(output_dir), **parameters},
        cwd=str(PROJECT_ROOT),
        kernel_name="python3",
        progress_bar=False,
    )
    return json.loads((output_dir / "figures" / "metrics.json").read_text())


class BackgroundRun:
    """run_notebook in a process of its own, started now; `metrics()` waits for it and returns what it wrote."""

    def __init__(self, output_dir, **parameters):
        pytest.importorskip("papermill")
        self.output_dir = output_dir
        output_dir.mkdir(parents=True, exist_ok=True)
        self.log = open(output_dir.parent / f"{output_dir.name}.log", "w+")
        self.process = subprocess.Popen(
            [sys.executable, "-c", BACKGROUND_RUN, str(output_dir),
             json.dumps({"OUTPUT_DIR": str(output_dir), **parameters}), str(PROJECT_ROOT / "model.ipynb"),
             str(PROJECT_ROOT)], stdout=self.log, stderr=subprocess.STDOUT, text=True)

    def metrics(self):
        returncode = self.process.wait()
        self.log.seek(0)
        assert returncode == 0, f"the notebook run into {self.output_dir} failed:\n{self.log.read()[-3000:]}"
        return json.loads((self.output_dir / "figures" / "metrics.json").read_text())

    def stop(self):
        """At the module's end: a run no test waited for (a test was deselected) is not left running."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.log.close()


def results_of(metrics):
    """Every model's test accuracy and test loss, as one flat dict."""
    return {f"{name} {key}": entry[key] for name, entry in metrics["models"].items()
            for key in ("test_accuracy", "test_loss")}


# The quick run's settings: QUICK, with the distortions and the attacks cut to the strongest of each (the same code,
# fewer numbers), which keeps each of this module's notebook runs about a minute shorter.
QUICK_RUN = {"QUICK": True,
             "ROBUSTNESS_AMOUNTS": {"rotation": [0, 45], "shift": [0, 6], "blur": [0, 2.0], "noise": [0, 0.4]},
             "ADVERSARIAL": {"digits": 100, "epsilons": [0, 0.3], "pgd_steps": 3, "reader_epsilons": [0.3]}}
# What the quick run has saved, in this order, when its first residual network is done: the resumed run starts there.
SAVED_BEFORE_THE_INTERRUPTION = BASELINE_MODELS + ["cnn_augmented", "resnet"]


@pytest.fixture(scope="module")
def background_runs(request, mnist_dir, tmp_path_factory):
    """The quick run, started in a process of its own as soon as the module starts if a selected test needs it."""
    runs = {}
    if any("quick_run" in item.fixturenames for item in request.session.items):
        runs["quick run"] = BackgroundRun(tmp_path_factory.mktemp("quick_run"), DATA_DIR=str(mnist_dir), **QUICK_RUN)
    yield runs
    for run in runs.values():
        run.stop()


@pytest.fixture(scope="module")
def resumed_run(background_runs, mnist_dir, tmp_path_factory):
    """The quick run's folder as it was when its first residual network had been saved, resumed in a process of
    its own beside the quick run; before that, the same folder with its first model from another CPU is refused."""
    papermill = pytest.importorskip("papermill")
    quick = background_runs["quick run"]
    saved = quick.output_dir / "saved_models"
    while not (saved / f"{SAVED_BEFORE_THE_INTERRUPTION[-1]}.history.json").is_file():  # written last, atomically
        assert quick.process.poll() is None, quick.metrics()
        time.sleep(1)
    output_dir = tmp_path_factory.mktemp("resumed_run")
    models = output_dir / "saved_models"
    models.mkdir()
    for name in SAVED_BEFORE_THE_INTERRUPTION:
        for suffix in (".keras", ".history.json"):
            shutil.copy2(saved / f"{name}{suffix}", models)
    record = json.loads((models / "dnn.history.json").read_text())
    (models / "dnn.history.json").write_text(json.dumps({**record, "cpu": "another CPU"}))
    with pytest.raises(papermill.PapermillExecutionError, match="was trained on another CPU, this machine is"):
        run_notebook(output_dir, RESUME=True, DATA_DIR=str(mnist_dir), **QUICK_RUN)
    (models / "dnn.history.json").write_text(json.dumps(record))
    background_runs["resumed"] = BackgroundRun(output_dir, RESUME=True, DATA_DIR=str(mnist_dir), **QUICK_RUN)
    return background_runs["resumed"]


@pytest.fixture(scope="module")
def quick_run(background_runs, resumed_run, mnist_dir, tmp_path_factory):
    """The quick run's folder, once it has finished. The resumed run (resumed_run) is started before this waits."""
    background_runs["quick run"].metrics()
    output_dir = background_runs["quick run"].output_dir
    # The run without training from its models goes beside the resumed run, on a machine with MNIST alone (an empty
    # shared data folder): the collections it lacks are left out, and it is a few minutes shorter.
    background_runs["explore"] = BackgroundRun(tmp_path_factory.mktemp("explore_run"), TRAIN=False, DATA_DIR=str(mnist_dir),
                                               SAVED_MODELS_DIR=str(output_dir / "saved_models"),
                                               SHARED_DATA_DIR=str(tmp_path_factory.mktemp("no_shared_data")), **QUICK_RUN)
    return output_dir


def test_committed_models_give_the_committed_numbers(mnist_dir, background_runs):
    """The committed saved_models/ and figures/metrics.json belong together: every committed model, loaded as a run
    without training loads it, gives its committed test accuracy on the full test set to within 0.0001, the ensembles
    as the mean of their members' probabilities, and so does each model at the strongest distortion of each kind, on
    scikit-learn's digits, and the ensemble on the committed generator's digits. First in the module
    (background_runs): the quick run trains beside it."""
    from sklearn.datasets import load_digits

    import generative
    import helpers
    import reader

    committed = json.loads((PROJECT_ROOT / "figures" / "metrics.json").read_text())
    assert committed["run"]["quick"] is False
    _, (test_images, test_labels) = helpers.load_mnist(mnist_dir)
    inputs = helpers.to_model_input(test_images)
    assert committed["run"]["test_images"] == len(inputs)
    models = {name: reader.load_model(PROJECT_ROOT / "saved_models" / f"{name}.keras")
              for name, entry in committed["models"].items() if "members" not in entry}

    def accuracies(images, labels, names):
        probabilities = {name: reader.predict_digits(models[name], images)[1] for name in names if name in models}
        for name in names:
            if name not in models:
                probabilities[name] = np.mean([probabilities[member] for member in committed["models"][name]["members"]],
                                              axis=0)
        return {name: helpers.accuracy(probabilities[name], labels) for name in names}

    measured = accuracies(inputs, test_labels, list(committed["models"]))
    assert measured == pytest.approx({name: entry["test_accuracy"] for name, entry in committed["models"].items()},
                                     abs=1e-4)
    for kind, entry in committed["robustness"].items():
        strongest = helpers.perturb_images(inputs, kind, entry["amounts"][-1], seed=committed["run"]["seed"])
        measured = accuracies(strongest, test_labels, list(entry["models"]))
        assert measured == pytest.approx({name: values[-1] for name, values in entry["models"].items()}, abs=1e-4), kind
    # Digits from elsewhere, prepared the MNIST way, as the notebook's cross-dataset section does.
    other = load_digits()
    other_inputs = {"naive_resize": helpers.naive_resize(other.images),
                    "prepared": np.stack([reader.prepare_digit_image(image) for image in other.images])[..., np.newaxis]}
    for method, images in other_inputs.items():
        measured = accuracies(images, other.target, list(committed["cross_dataset"]["models"]))
        assert measured == pytest.approx({name: scores[method] for name, scores in committed["cross_dataset"]["models"].items()},
                                         abs=1e-4), method
    # The committed generator draws the same digits, which the committed ensemble reads as before.
    generated = committed["generative"]
    generated_labels = np.arange(generated["digits"]) % 10
    generated_images = generative.generate(reader.load_model(PROJECT_ROOT / "saved_models" / "generator.keras"),
                                           generated_labels, committed["run"]["seed"])
    members = committed["models"]["ensemble"]["members"]
    assert accuracies(generated_images, generated_labels, [*members, "ensemble"])["ensemble"] == pytest.approx(
        generated["ensemble_accuracy_on_generated"], abs=1e-4)


def test_quick_run_refuses_to_overwrite_the_committed_results(tmp_path):
    papermill = pytest.importorskip("papermill")
    with pytest.raises(papermill.PapermillExecutionError, match="QUICK=True, TRAIN=True would overwrite the committed"):
        papermill.execute_notebook(
            str(PROJECT_ROOT / "model.ipynb"), str(tmp_path / "refused.ipynb"),
            parameters={"QUICK": True, "OUTPUT_DIR": "."}, cwd=str(PROJECT_ROOT),
            kernel_name="python3", progress_bar=False,
        )


def test_explore_without_saved_models_names_the_file_and_the_fix(mnist_dir, tmp_path):
    papermill = pytest.importorskip("papermill")
    empty, output = tmp_path / "no_models", tmp_path / "out"
    empty.mkdir()
    output.mkdir()
    with pytest.raises(papermill.PapermillExecutionError, match=r"dnn\.keras: no such saved model; run `make run`"):
        run_notebook(output, QUICK=True, TRAIN=False, DATA_DIR=str(mnist_dir), SAVED_MODELS_DIR=str(empty))


def test_notebook_runs_without_errors(quick_run):
    notebook = json.loads((quick_run / "model.ipynb").read_text())
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            assert not any(output.get("output_type") == "error" for output in cell.get("outputs", []))
            assert cell["execution_count"] is not None


def test_every_figure_is_written(quick_run):
    expected = (EXPECTED_FIGURES + (WRITER_FIGURES if (SHARED_DATA / "qmnist").is_dir() else [])
                + (PEN_FIGURES if (SHARED_DATA / "pendigits").is_dir() else []))
    missing = [name for name in expected if not (quick_run / "figures" / f"{name}.png").is_file()]
    assert missing == []


def test_writers_split_and_adaptation_entries(quick_run):
    if not ((SHARED_DATA / "qmnist").is_dir() and (SHARED_DATA / "pendigits").is_dir()):
        pytest.skip(f"no {SHARED_DATA}/qmnist or pendigits: the notebook skips the per-writer views")
    import reader

    metrics = json.loads((quick_run / "figures" / "metrics.json").read_text())
    assert metrics["run"]["validation_split_by"] == "writer"
    writers = metrics["writers"]
    assert writers["test_writers"] > 100  # QUICK's 1,000 test digits come from many writers
    for name in ("ensemble",):
        entry = writers[name]
        assert 0.0 <= entry["worst_writer"] <= entry["mean_writer"] <= 1.0 and len(entry["worst_writers"]) == 10
        assert [each["accuracy"] for each in entry["worst_writers"]] == sorted(each["accuracy"] for each in entry["worst_writers"])
    adaptation = metrics["adaptation"]
    measured = {name: entry for name, entry in adaptation["candidates"].items() if entry["validation_accuracy"] is not None}
    assert adaptation["adopted_name"] == max(measured, key=lambda name: measured[name]["validation_accuracy"])
    assert reader.load_reader(quick_run / "saved_models").adaptation == adaptation["adopted"]
    pen = adaptation["pen"]
    assert pen["0"]["writers"] == 10 and "1" in pen  # the held-out pen writers 21-30
    for entry in pen.values():
        assert 0.0 <= entry["worst"] <= entry["mean"] <= 1.0 and 0.0 <= entry["before_worst"] <= entry["before_mean"] <= 1.0
    refused = adaptation["non_digits_refused"]
    assert set(refused["before"]) == set(refused["after_mean"]) and refused["adapted_readers"] >= 1
    assert refused["before"] == pytest.approx(metrics["refusal"]["refused"])
    assert 0 < adaptation["seconds_to_adapt"]["median_wall"] < 30
    pen_digits = metrics["cross_dataset"]["pen_digits"]["models"]["ensemble"]
    assert pen_digits["all writers"]["writers"] == 30 and pen_digits["held-out writers"]["writers"] == 10


def test_metrics_are_well_formed(quick_run):
    metrics = json.loads((quick_run / "figures" / "metrics.json").read_text())
    run = metrics["run"]
    assert run["quick"] is True
    for key in ("seed", "tensorflow", "keras", "python", "total_seconds", "cpu_seconds", "section_seconds",
                "section_cpu_seconds"):
        assert key in run
    assert run["cpu_seconds"] > 0 and set(run["section_cpu_seconds"]) == set(run["section_seconds"])
    assert run["resumed"] == []  # a run that was not interrupted loaded nothing of its own
    for name in BASELINE_MODELS + NEW_MODELS:
        entry = metrics["models"][name]
        for key in ("test_accuracy", "test_loss", "params", "epochs", "train_seconds", "best_val_accuracy"):
            assert key in entry, f"{name} lacks {key}"
        # Chance is 10%: even two epochs on 2,400 images should be far above it.
        assert entry["test_accuracy"] > 0.5, f"{name}: {entry['test_accuracy']}"
        assert entry["params"] > 10000 and entry["train_seconds"] > 0 and entry["train_cpu_seconds"] > 0
        # The recipe is recorded, so the benchmarks can retrain the saved architecture the same way.
        assert {"epochs", "batch_size", "learning_rate", "schedule", "augmentation"} <= set(entry["training"])
    # The fast recipe is the best recipe's, shorter: what `make benchmark` measured, named in the parameters cell.
    fast, best = metrics["fast_recipe"], metrics["models"]["resnet"]["training"]
    assert {key: value for key, value in fast.items() if key != "epochs"} == {
        key: value for key, value in best.items() if key not in ("epochs", "train_images")}
    for kind in ("rotation", "shift", "blur", "noise"):
        curve = metrics["robustness"][kind]
        assert curve["amounts"][0] == 0
        assert set(curve["models"]) == set(BASELINE_MODELS + NEW_MODELS + ["ensemble"])
        for name in BASELINE_MODELS:
            accuracies = curve["models"][name]
            assert len(accuracies) == len(curve["amounts"])
            # Undistorted accuracy is the test accuracy; the strongest distortion must cost something.
            assert accuracies[0] == pytest.approx(metrics["models"][name]["test_accuracy"], abs=1e-6)
    assert metrics["robustness"]["rotation"]["models"]["cnn_basic"][-1] < metrics["models"]["cnn_basic"]["test_accuracy"]
    for name in BASELINE_MODELS:
        scores = metrics["cross_dataset"]["models"][name]
        assert 0.0 <= scores["naive_resize"] <= 1.0 and 0.2 < scores["prepared"] <= 1.0


def test_adversarial_and_inspection_entries(quick_run):
    metrics = json.loads((quick_run / "figures" / "metrics.json").read_text())
    attacks = metrics["adversarial"]
    assert attacks["digits"] == 100 and attacks["epsilons"][0] == 0 and attacks["cpu_seconds"] > 0
    for attack in ("fgsm", "pgd"):
        assert set(attacks[attack]) == set(BASELINE_MODELS + NEW_MODELS + ["ensemble"])
        for name, accuracies in attacks[attack].items():
            assert len(accuracies) == len(attacks["epsilons"])
            assert accuracies[-1] < accuracies[0], (attack, name)  # epsilon 0.3 costs every network something
        assert attacks["fgsm"]["dnn"][0] == attacks["pgd"]["dnn"][0]  # epsilon 0: the same clean digits
    assert set(attacks["reader"]["members"]) in (set(OUTLIER_EXPOSURE_MODELS), {"resnet", "resnet_seed2", "resnet_seed3"})
    for shares in attacks["reader"]["verdicts"].values():
        assert sum(shares.values()) == pytest.approx(1.0)
    inspection = metrics["inspection"]
    assert inspection["embedding"]["digits"] == 500
    for name in ("dnn",):
        assert -1.0 <= inspection["embedding"][name]["silhouette"] <= 1.0
    assert 0.0 < inspection["top_20_pixel_share"]["right"] <= 1.0 and 0.0 < inspection["top_20_pixel_share"]["misread"] <= 1.0
    assert set(inspection["edge_kernel_share"]) >= {"cnn_basic"}
    assert set(metrics["run"]["section_seconds"]) >= {"adversarial", "inspection"}


def test_generated_digits_entries(quick_run):
    metrics = json.loads((quick_run / "figures" / "metrics.json").read_text())
    generated = metrics["generative"]
    assert generated["kind"] in ("cvae", "cgan") and set(generated["trials"]) == {"cvae", "cgan"}
    # The kind kept is the one closer to the validation digits.
    assert generated["kind"] == min(generated["trials"], key=lambda kind: generated["trials"][kind]["frechet_distance_validation"])
    assert generated["digits"] == 1000 and generated["train_cpu_seconds"] > 0
    assert 0.0 <= generated["ensemble_accuracy_on_generated"] <= 1.0 and 0.1 <= generated["ensemble_mean_confidence"] <= 1.0
    assert len(generated["ensemble_accuracy_by_digit"]) == 10
    assert generated["frechet_distance"]["generated_to_test"] > 0 and generated["frechet_distance"]["test_halves"] >= 0
    assert 0.0 <= generated["train_on_synthetic_test_accuracy"] <= 1.0
    assert sum(generated["reader_on_generated"].values()) == pytest.approx(1.0)
    low_label = generated["low_label"]
    assert set(low_label["test_accuracy"]) == {"100"}
    assert set(low_label["test_accuracy"]["100"]) == {"real", "real + generated"}
    assert low_label["mean"]["100"]["real"] == pytest.approx(np.mean(low_label["test_accuracy"]["100"]["real"]))
    assert "generative" in metrics["run"]["section_seconds"]
    import reader

    generator = reader.load_model(quick_run / "saved_models" / "generator.keras")
    assert generator.output_shape == (None, 28, 28, 1)


def test_ensemble_and_tuner_entries(quick_run):
    metrics = json.loads((quick_run / "figures" / "metrics.json").read_text())
    ensemble = metrics["models"]["ensemble"]
    assert set(ensemble["members"]) <= set(NEW_MODELS + BASELINE_MODELS) and len(ensemble["members"]) >= 2
    assert 0.5 < ensemble["test_accuracy"] <= 1.0 and ensemble["test_loss"] > 0
    tuner = metrics["tuner"]
    assert len(tuner["trials"]) >= 1 and tuner["best_val_accuracy"] == max(t["val_accuracy"] for t in tuner["trials"])
    assert set(tuner["best_hyperparameters"]) == {"base_filters", "dense_units", "l2", "dropout_conv",
                                                  "dropout_dense", "learning_rate"}
    assert set(metrics["run"]["section_seconds"]) >= {"training", "resnet", "tuning", "robustness"}
    for name in ["resnet", "resnet_seed2", "resnet_seed3", "ensemble"]:  # test-time shifts, beside the plain numbers
        assert 0.5 < metrics["models"][name]["test_accuracy_shifted"] <= 1.0
        assert 0.5 < metrics["models"][name]["validation_accuracy_shifted"] <= 1.0


def test_calibration_and_refusal_entries(quick_run):
    metrics = json.loads((quick_run / "figures" / "metrics.json").read_text())
    calibration = metrics["calibration"]
    assert set(calibration) >= set(BASELINE_MODELS + NEW_MODELS + OUTLIER_EXPOSURE_MODELS + ["ensemble", "ensemble_oe"])
    for name, entry in calibration.items():
        assert set(entry) == {"temperature", "ece_before", "ece_after", "nll_before", "nll_after"}, name
        assert entry["temperature"] > 0 and 0 <= entry["ece_after"] <= 1 and entry["nll_after"] > 0
    refusal = metrics["refusal"]
    assert refusal["score"] in refusal["candidates"] and refusal["keep_on_validation"] == 0.99
    # The threshold was chosen on validation data; every share is a share.
    assert {"MNIST test", "scikit-learn digits"} <= set(refusal["kept"])
    assert {"scribbles", "blobs", "noise", "blank paper", "two digits"} <= set(refusal["refused"])
    for value in [*refusal["kept"].values(), *refusal["refused"].values()]:
        assert 0.0 <= value <= 1.0
    for name, candidate in refusal["candidates"].items():
        assert set(candidate["validation_refused"]) <= set(refusal["refused"]), name
    chosen = max(refusal["candidates"], key=lambda name: refusal["candidates"][name]["validation_mean_refused"])
    assert chosen == refusal["score"]
    assert metrics["models"]["ensemble_oe"]["members"] == OUTLIER_EXPOSURE_MODELS


def test_the_saved_reader_reads_as_the_notebook_did(quick_run, mnist_dir):
    import helpers
    import reader

    metrics = json.loads((quick_run / "figures" / "metrics.json").read_text())
    digit_reader = reader.load_reader(quick_run / "saved_models")
    assert digit_reader.threshold == pytest.approx(metrics["refusal"]["threshold"])
    assert list(digit_reader.models) == metrics["refusal"]["members"]
    _, (test_images, _) = helpers.load_mnist(mnist_dir)
    readings = digit_reader.read(helpers.to_model_input(test_images[:1000]))
    kept = np.mean([reading.verdict != "not a digit" for reading in readings])
    assert kept == pytest.approx(metrics["refusal"]["kept"]["MNIST test"], abs=1e-9)


def test_classification_report_csv(quick_run):
    lines = (quick_run / "figures" / "classification_report.csv").read_text().splitlines()
    assert lines[0] == "model,digit,precision,recall,f1,support"
    # Every model and the ensemble, ten digits each.
    assert len(lines) == 1 + 10 * (len(BASELINE_MODELS) + len(NEW_MODELS) + 1)
    supports = [int(line.split(",")[-1]) for line in lines[1:11]]
    assert sum(supports) == 1000  # QUICK tests on the first 1,000 test digits


def test_saved_models_reload_and_predict(quick_run, mnist_dir):
    import keras

    import helpers

    _, (test_images, test_labels) = helpers.load_mnist(mnist_dir)
    inputs = helpers.to_model_input(test_images[:200])
    for name in BASELINE_MODELS + NEW_MODELS + OUTLIER_EXPOSURE_MODELS:
        model = keras.saving.load_model(quick_run / "saved_models" / f"{name}.keras", safe_mode=True)
        predictions = model.predict(inputs, verbose=0).argmax(axis=1)
        assert np.mean(predictions == test_labels[:200]) > 0.5, name
        history = json.loads((quick_run / "saved_models" / f"{name}.history.json").read_text())
        assert len(history["history"]["val_accuracy"]) >= 1 and history["training"]["epochs"] in (1, 2)
    assert json.loads((quick_run / "saved_models" / "tuner.json").read_text())["trials"]


def without_timings(entry):
    """A metrics entry without what the clock says (seconds, the models a run resumed from): what the seed decides."""
    if isinstance(entry, dict):
        return {key: without_timings(value) for key, value in entry.items()
                if "seconds" not in key and key != "resumed"}
    if isinstance(entry, list):
        return [without_timings(value) for value in entry]
    return entry


def test_resumed_run_loads_what_was_saved_trains_the_rest_and_gives_the_same_numbers(quick_run, resumed_run):
    """As if the quick run had been interrupted after its first residual network: a run resumed in a copy of its
    folder as it was then loads the models saved there, trains the other residual networks, the tuner, the tuned
    CNN and the rest, and gives every number the whole run gave: the same seed trains them to the same numbers.
    A saved model from another CPU is refused (resumed_run)."""
    first = json.loads((quick_run / "figures" / "metrics.json").read_text())
    resumed = resumed_run.metrics()
    assert resumed["run"]["resumed"] == SAVED_BEFORE_THE_INTERRUPTION
    assert without_timings(resumed) == without_timings(first)
    # The loaded model's training counts in the run's seconds, in the section that trained it, beside those trained now.
    assert resumed["models"]["resnet"]["train_cpu_seconds"] == first["models"]["resnet"]["train_cpu_seconds"]
    assert resumed["run"]["section_cpu_seconds"]["resnet"] >= sum(
        resumed["models"][name]["train_cpu_seconds"] for name in ("resnet", "resnet_seed2", "resnet_seed3"))


def test_explore_without_training_reproduces_the_run_it_loads(quick_run, background_runs):
    """Without training, the quick run's models give its numbers again, on a machine without the shared data (the
    models' test accuracies do not depend on it); the views that need the shared data are left out."""
    first = json.loads((quick_run / "figures" / "metrics.json").read_text())
    explored, explore_dir = background_runs["explore"].metrics(), background_runs["explore"].output_dir
    assert explored["run"]["train"] is False
    assert explored["run"]["validation_split_by"] != "writer" and explored["writers"] is None
    assert "pen_digits" not in explored["cross_dataset"]
    assert results_of(explored) == pytest.approx(results_of(first), abs=1e-6)
    for name, entry in explored["models"].items():
        if "members" not in entry:
            assert entry["train_seconds"] == first["models"][name]["train_seconds"]
    assert explored["tuner"] == first["tuner"]
    # The generator is reloaded and draws the same digits; what needed training comes back from generator.json.
    assert explored["generative"]["ensemble_accuracy_on_generated"] == pytest.approx(first["generative"]["ensemble_accuracy_on_generated"], abs=1e-6)
    for key in ("train_on_synthetic_test_accuracy", "low_label", "train_cpu_seconds", "trials"):
        assert explored["generative"][key] == first["generative"][key], key
    missing = [name for name in EXPECTED_FIGURES if not (explore_dir / "figures" / f"{name}.png").is_file()]
    assert missing == []
    assert not list((explore_dir / "saved_models").glob("*.keras"))  # nothing was trained, nothing saved
