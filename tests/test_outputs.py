"""Saving figures, metrics and models, the plotting helpers, and the text written from metrics."""

import json
import os
import stat

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import helpers  # noqa: E402


def is_png(path):
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def small_metrics(quick=False):
    return {
        "run": {"quick": quick, "test_images": 10000, "total_seconds": 600.0, "tensorflow": "2.21.0",
                "keras": "3.15.1", "cpu": "AMD EPYC, 2 cores"},
        "models": {
            "dnn": {"test_accuracy": 0.9790, "test_loss": 0.07, "params": 101770, "epochs": 15,
                    "train_seconds": 60.0, "best_val_accuracy": 0.978},
            "cnn_basic": {"test_accuracy": 0.9910, "test_loss": 0.03, "params": 225034, "epochs": 12,
                          "train_seconds": 200.0, "best_val_accuracy": 0.99},
        },
    }


def test_save_fig_writes_png_and_leaves_no_temporary(tmp_path):
    figure, axis = plt.subplots()
    axis.plot([0, 1], [1, 0])
    path = helpers.save_fig(figure, "line", tmp_path / "figures")
    assert path == tmp_path / "figures" / "line.png" and is_png(path)
    assert [p.name for p in path.parent.iterdir()] == ["line.png"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # the permissions of any new file
    plt.close(figure)


def test_failed_figure_save_keeps_the_old_file(tmp_path):
    figure, _ = plt.subplots()
    path = helpers.save_fig(figure, "kept", tmp_path)
    good_bytes = path.read_bytes()

    class BrokenFigure:
        def savefig(self, target, **kwargs):
            open(target, "wb").write(b"half a png")
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        helpers.save_fig(BrokenFigure(), "kept", tmp_path)
    assert path.read_bytes() == good_bytes
    assert [p.name for p in tmp_path.iterdir()] == ["kept.png"]
    plt.close(figure)


def test_write_json_round_trip(tmp_path):
    path = helpers.write_json(small_metrics(), tmp_path / "metrics.json")
    assert json.loads(path.read_text())["models"]["dnn"]["epochs"] == 15


@pytest.mark.parametrize(
    "name, make_figure",
    [
        ("class_balance", lambda: helpers.plot_class_balance(np.arange(100) % 10, np.arange(30) % 10)),
        ("digit_grid", lambda: helpers.plot_digit_grid(np.random.rand(12, 28, 28), [str(i) for i in range(12)],
                                                       columns=5, title_colors=["red"] * 12, suptitle="digits")),
        ("history", lambda: helpers.plot_history(
            {"loss": [0.5, 0.3], "accuracy": [0.8, 0.9], "val_loss": [0.4, 0.35], "val_accuracy": [0.85, 0.88]}, "m")),
        ("overlay", lambda: helpers.plot_validation_overlay(
            {"a": {"val_loss": [0.4, 0.3], "val_accuracy": [0.9, 0.95]},
             "b": {"val_loss": [0.3, 0.2], "val_accuracy": [0.96, 0.99]}})),
        ("confusion", lambda: helpers.plot_confusion_matrices(
            {"a": np.eye(10) * 50 + 1, "b": np.eye(10) * 40}, normalize=True)),
        ("bars", lambda: helpers.plot_metric_bars({"a": 97.9, "b": 99.1, "c": 99.4}, "Test accuracy", "%")),
    ],
)
def test_plots_write_files(tmp_path, name, make_figure):
    figure = make_figure()
    path = helpers.save_fig(figure, name, tmp_path)
    assert is_png(path) and path.stat().st_size > 5000
    plt.close(figure)


def test_metric_bars_zoom_to_the_data_and_label_values():
    figure = helpers.plot_metric_bars({"a": 97.9, "b": 99.1, "c": 99.4}, "Test accuracy", "%", "{:.2f}%")
    axis = figure.axes[0]
    low, high = axis.get_ylim()
    assert 90 < low < 97.9 and high > 99.4
    assert [text.get_text() for text in axis.texts] == ["97.90%", "99.10%", "99.40%"]
    plt.close(figure)


def test_tuner_plot_zooms_in_but_marks_every_trial_below_the_axis(tmp_path):
    scores = [0.9807, 0.9847, 0.9853, 0.9798, 0.9691, 0.9841, 0.9876, 0.9822, 0.9829, 0.9865, 0.9690, 0.9597]
    trials = [{"trial": index + 1, "val_accuracy": score, "learning_rate": 1e-3 * (1 + index / 4),
               "dropout_dense": 0.2 + 0.025 * index} for index, score in enumerate(scores)]
    figure = helpers.plot_tuner_trials(trials)
    order_axis, rate_axis = figure.axes[:2]
    low, _ = order_axis.get_ylim()
    assert 96.0 < low < 98.0  # zoomed in: the worst trial, 95.97%, lies below the axis
    for axis in (order_axis, rate_axis):
        assert [text.get_text() for text in axis.texts] == ["95.97"]
    assert is_png(helpers.save_fig(figure, "tuner_trials", tmp_path))
    plt.close(figure)


def test_save_model_checked_reloads_in_safe_mode(tmp_path):
    import keras

    inputs = keras.Input(shape=(28, 28, 1))
    outputs = keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, outputs)
    samples = np.random.default_rng(0).random((8, 28, 28, 1), dtype=np.float32)
    path = tmp_path / "tiny.keras"
    reloaded = helpers.save_model_checked(model, path, samples)
    assert path.is_file()
    np.testing.assert_allclose(reloaded.predict(samples, verbose=0), model.predict(samples, verbose=0), atol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.keras"]
    with pytest.raises(ValueError, match="ending in .keras"):
        helpers.save_model_checked(model, tmp_path / "tiny.h5", samples)


def test_save_model_with_lambda_layer_is_refused_and_keeps_the_old_file(tmp_path):
    import keras

    inputs = keras.Input(shape=(28, 28, 1))
    good = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(inputs)))
    samples = np.zeros((2, 28, 28, 1), np.float32)
    path = tmp_path / "model.keras"
    helpers.save_model_checked(good, path, samples)
    good_bytes = path.read_bytes()
    flat = keras.layers.Flatten()(inputs)
    unsafe = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(keras.layers.Dense(10)(flat)))
    with pytest.raises(ValueError, match="(?i)lambda|safe_mode"):
        helpers.save_model_checked(unsafe, path, samples)
    assert path.read_bytes() == good_bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"]


def test_results_table_and_conclusion_come_from_metrics():
    metrics = small_metrics()
    table = helpers.results_table_markdown(metrics)
    assert "| dnn | 97.90% | 0.0700 | 101,770 | 15 | 60 |" in table
    text = helpers.conclusion_markdown(metrics, {"dnn": 0.978, "cnn_basic": 0.992})
    assert "**cnn_basic** is the most accurate" in text and "90 of 10,000" in text
    assert "removes 57% of the errors of `dnn` (210 -> 90)" in text
    assert "`dnn` at least 97.80%: 97.90%, met." in text
    assert "`cnn_basic` at least 99.20%: 99.10%, missed by 0.10 points." in text
    assert "Quick run" in helpers.conclusion_markdown(small_metrics(quick=True))


def test_conclusion_reports_robustness_of_the_best_tested_model_when_an_ensemble_leads():
    metrics = small_metrics()
    metrics["models"]["ensemble"] = {"test_accuracy": 0.9950, "test_loss": 0.02, "members": ["dnn", "cnn_basic"]}
    metrics["robustness"] = {
        "rotation": {"amounts": [0, 45], "models": {"dnn": [0.979, 0.47], "cnn_basic": [0.991, 0.59]}},
        "shift": {"amounts": [0, 6], "models": {"dnn": [0.979, 0.07], "cnn_basic": [0.991, 0.03]}},
    }
    text = helpers.conclusion_markdown(metrics)
    assert "**ensemble** is the most accurate" in text
    assert "`cnn_basic` keeps: rotation 45: 59.0%; shift 6: 3.0%." in text


def test_update_readme_results_replaces_only_the_marked_part(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# Title\n<!-- results:start -->\nold table\n<!-- results:end -->\nTail text\n")
    helpers.update_readme_results(readme, small_metrics())
    text = readme.read_text()
    assert "old table" not in text and "| cnn_basic | 99.10% |" in text
    assert text.startswith("# Title\n") and text.endswith("Tail text\n")
    readme.write_text("no markers")
    with pytest.raises(ValueError, match="markers"):
        helpers.update_readme_results(readme, small_metrics())


def test_section_timer_adds_up_sections():
    timer = helpers.SectionTimer()
    timer.start("a")
    timer.start("b")
    timer.start("a")
    timer.stop()
    assert set(timer.seconds) == {"a", "b"} and all(value >= 0 for value in timer.seconds.values())


def test_section_timer_credits_work_done_before_a_resumed_run_to_its_section_and_the_total():
    timer = helpers.SectionTimer()
    timer.start("training")
    timer.credit(100.0, 150.0)
    timer.start("evaluation")
    totals = timer.totals()
    assert totals["section_seconds"]["training"] >= 100.0 and totals["section_cpu_seconds"]["training"] >= 150.0
    assert totals["total_seconds"] >= 100.0 and totals["cpu_seconds"] >= 150.0
    assert totals["section_seconds"]["evaluation"] < 100.0


def test_readme_results_carry_calibration_and_refusal_when_the_run_has_them(tmp_path):
    metrics = small_metrics()
    metrics["calibration"] = {"cnn_basic": {"temperature": 1.5, "ece_before": 0.004, "ece_after": 0.002,
                                            "nll_before": 0.03, "nll_after": 0.025}}
    metrics["refusal"] = {"score": "energy, ensemble as trained", "members": ["cnn_basic", "dnn"], "threshold": 7.25,
                          "keep_on_validation": 0.99, "kept": {"MNIST test": 0.9905},
                          "refused": {"scribbles": 0.96, "digit-shaped letters": 0.3},
                          "accuracy_on_kept_mnist_test": 0.998, "accuracy_all_mnist_test": 0.9969,
                          "not_sure_mnist_test": 0.004, "auroc_mnist_test_against_letters": 0.991}
    readme = tmp_path / "README.md"
    readme.write_text("<!-- results:start -->\n<!-- results:end -->\n")
    helpers.update_readme_results(readme, metrics)
    text = readme.read_text()
    assert "| cnn_basic | 1.500 | 0.40% | 0.20% | 0.0300 | 0.0250 |" in text
    assert "**energy, ensemble as trained**" in text and "refusing below 7.25" in text
    assert "| MNIST test | real digits | 99.05% | 0.95% |" in text
    assert "| scribbles | not digits | 4.00% | 96.00% |" in text
    assert "| digit-shaped letters | ambiguous: measured apart | 70.00% | 30.00% |" in text
    assert "right 99.80% of the time" in text and "AUROC of its score" in text and "0.9910" in text
    # A run from before the reader existed writes the table alone.
    assert helpers.reader_summary_markdown(small_metrics()) == ""
