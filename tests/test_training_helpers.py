"""The input pipeline, augmentation, training, evaluation and results-file helpers, on small real inputs."""

import re
import time
from pathlib import Path

import keras
import matplotlib
import numpy as np
import pytest
from scipy import ndimage

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import helpers  # noqa: E402
from benchmarks import recipes  # noqa: E402

RECIPE = {"max_degrees": 15, "max_shift": 0.1, "max_zoom": 0.1, "elastic_alpha": 34.0, "elastic_sigma": 4.0,
          "elastic_fraction": 0.5, "blur_probability": 0.5, "max_blur_sigma": 2.0, "max_contrast": 0.3,
          "max_stroke_change": 0.5, "max_noise": 0.35}


def digits(count=8, seed=0):
    """Thick bars and rings, drawn here: float32 (N, 28, 28, 1) in [0, 1]."""
    rng = np.random.default_rng(seed)
    images = np.zeros((count, 28, 28), np.float32)
    rows, columns = np.indices((28, 28))
    for index in range(count):
        if index % 2:
            images[index, 6:22, 12 + rng.integers(-2, 3):16] = 1.0
        else:
            radius = np.hypot(rows - 14, columns - 14)
            images[index] = ((radius > 5) & (radius < 8)).astype(np.float32)
    return images[..., np.newaxis]


def tiny_classifier():
    inputs = keras.Input(shape=(28, 28, 1))
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(inputs)))


# ---- input pipeline and augmentation ----------------------------------------------------

def test_make_dataset_batches_shuffles_and_augments_every_image():
    images, labels = digits(10), np.arange(10) % 10
    plain = [(batch.numpy(), batch_labels.numpy()) for batch, batch_labels in helpers.make_dataset(images, labels, 4)]
    assert [len(batch) for batch, _ in plain] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([batch for batch, _ in plain]), images)
    shuffled = helpers.make_dataset(images, labels, 4, shuffle=True, seed=1)
    order = np.concatenate([batch_labels.numpy() for _, batch_labels in shuffled])
    assert sorted(order) == sorted(labels) and list(order) != list(labels)
    augmented = helpers.make_dataset(images, labels, 4, augmentation=helpers.augmentation_layers(RECIPE, seed=1))
    batches = [(batch.numpy(), batch_labels.numpy()) for batch, batch_labels in augmented]
    # Every batch keeps one image per label, even the last, shorter one.
    assert [(len(batch), len(batch_labels)) for batch, batch_labels in batches] == [(4, 4), (4, 4), (2, 2)]
    assert not np.allclose(np.concatenate([batch for batch, _ in batches]), images)


def test_augmentation_keeps_the_range_and_never_acts_at_inference():
    images = digits(16)
    augmentation = helpers.augmentation_layers(RECIPE, seed=3)
    augmented = keras.ops.convert_to_numpy(augmentation(images, training=True))
    assert augmented.shape == images.shape and augmented.dtype == np.float32
    assert augmented.min() >= 0.0 and augmented.max() <= 1.0 + 1e-6
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(augmentation(images, training=False)), images)


def test_augmentation_layers_refuse_unknown_settings_and_leave_out_zero_steps():
    with pytest.raises(ValueError, match="max_rotation"):
        helpers.augmentation_layers({"max_rotation": 10})
    assert len(helpers.augmentation_layers({"max_degrees": 0, "max_noise": 0.1}).layers) == 1


@pytest.mark.parametrize("layer", [helpers.RandomElastic(alpha=0.0), helpers.RandomElastic(fraction=0.0),
                                   helpers.RandomStrokeWidth(0.0), helpers.RandomNoise(0.0)])
def test_zero_strength_changes_nothing(layer):
    images = digits(6)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(images, training=True)), images)


def test_elastic_distortion_moves_strokes_by_a_pixel_or_two_and_only_in_the_first_half():
    images = digits(8)
    distorted = keras.ops.convert_to_numpy(helpers.RandomElastic(alpha=34.0, sigma=4.0, fraction=0.5, seed=1)(images))
    np.testing.assert_array_equal(distorted[4:], images[4:])
    for before, after in zip(images[:4, ..., 0], distorted[:4, ..., 0]):
        assert not np.allclose(before, after)
        # Smooth displacements keep the ink: its total and centre of mass barely move.
        assert abs(after.sum() - before.sum()) < 0.3 * before.sum()
        shift = np.subtract(ndimage.center_of_mass(after), ndimage.center_of_mass(before))
        assert np.hypot(*shift) < 2.0


def test_elastic_distortion_works_in_a_tf_data_pipeline_of_unknown_batch_size():
    layer = helpers.RandomElastic(fraction=1.0, seed=2)
    dataset = helpers.make_dataset(digits(10), np.zeros(10, np.int64), 4, augmentation=layer)
    assert [len(batch) for batch, _ in dataset] == [4, 4, 2]


def test_stroke_width_thickens_or_thins_the_ink():
    images = digits(64)
    changed = keras.ops.convert_to_numpy(helpers.RandomStrokeWidth(0.9, seed=4)(images))
    ink_before, ink_after = images.sum(axis=(1, 2, 3)), changed.sum(axis=(1, 2, 3))
    assert (ink_after > ink_before * 1.1).any() and (ink_after < ink_before * 0.9).any()
    assert changed.min() >= 0.0 and changed.max() <= 1.0


def test_noise_reaches_only_the_share_of_images_it_is_asked_to():
    images = np.full((400, 28, 28, 1), 0.5, np.float32)
    noisy = keras.ops.convert_to_numpy(helpers.RandomNoise(0.3, probability=0.5, seed=6)(images))
    untouched = np.mean(np.all(noisy == 0.5, axis=(1, 2, 3)))
    assert 0.4 < untouched < 0.6


def test_noise_strength_varies_from_image_to_image():
    images = np.full((200, 28, 28, 1), 0.5, np.float32)
    noisy = keras.ops.convert_to_numpy(helpers.RandomNoise(0.3, seed=5)(images))
    spread = noisy.std(axis=(1, 2, 3))
    assert 0.0 <= spread.min() < 0.08 and 0.22 < spread.max() <= 0.3
    assert noisy.min() >= 0.0 and noisy.max() <= 1.0


# ---- training ---------------------------------------------------------------------------

def test_one_cycle_schedule_warms_up_then_decays():
    schedule = helpers.one_cycle_schedule(4e-3, total_steps=100, warmup_fraction=0.1)
    rate = [float(schedule(step)) for step in (0, 10, 55, 100)]
    assert rate[0] == pytest.approx(4e-4)
    assert rate[1] == pytest.approx(4e-3)
    assert rate[1] > rate[2] > rate[3] == pytest.approx(4e-5, rel=1e-3)


def test_learning_rate_schedule_follows_the_recipe():
    assert helpers.learning_rate_schedule({"epochs": 2, "learning_rate": 1e-3, "schedule": "constant"}, 10) == 1e-3
    cosine = helpers.learning_rate_schedule({"epochs": 2, "learning_rate": 2e-3, "schedule": "cosine"}, 10)
    assert float(cosine(0)) == pytest.approx(2e-3) and float(cosine(20)) == pytest.approx(2e-5, rel=1e-3)
    with pytest.raises(ValueError, match="'step'"):
        helpers.learning_rate_schedule({"epochs": 2, "learning_rate": 1e-3, "schedule": "step"}, 10)


def test_fit_timed_logs_one_line_per_epoch_and_returns_wall_and_cpu_seconds(capsys):
    images, labels = digits(32), np.arange(32) % 2
    model = helpers.compile_for_training(tiny_classifier(), {"epochs": 2, "learning_rate": 1e-2, "schedule": "one_cycle"}, 4)
    data = helpers.make_dataset(images, labels, 8, shuffle=True)
    history, seconds, cpu_seconds = helpers.fit_timed(model, data, data, 2, "tiny")
    lines = [line for line in capsys.readouterr().out.splitlines() if "tiny epoch" in line]
    assert len(lines) == 2 and "epoch  2/2" in lines[1] and "val_accuracy" in lines[1]
    assert len(history["loss"]) == 2 and history["loss"][1] < history["loss"][0]
    assert seconds > 0 and cpu_seconds > 0
    assert helpers.accuracy(model.predict(images, verbose=0), labels) == 1.0


def test_fit_recipe_is_the_recipe_with_its_optional_label_smoothing_and_weight_averaging():
    images, labels = digits(32), np.arange(32) % 2
    recipe = {"epochs": 2, "batch_size": 8, "learning_rate": 1e-2, "schedule": "constant", "augmentation": None,
              "early_stopping_patience": None}

    def trained(**changes):
        keras.utils.set_random_seed(0)
        model = tiny_classifier()
        history, seconds, cpu_seconds = helpers.fit_recipe(model, {**recipe, **changes}, images, labels,
                                                           (images, labels), 0, "tiny")
        assert len(history["val_accuracy"]) == 2 and seconds > 0 and cpu_seconds > 0
        return model

    plain = trained()
    assert helpers.accuracy(plain.predict(images, verbose=0), labels) == 1.0
    smoothed = trained(label_smoothing=0.1)
    assert smoothed.loss.label_smoothing == 0.1  # integer labels became one-hot rows for it
    averaged = trained(use_ema=True)
    assert averaged.optimizer.use_ema
    # fit leaves the moving averages in the model, which lag behind the plain run's weights.
    assert not np.allclose(averaged.get_weights()[0], plain.get_weights()[0])


def test_epoch_test_accuracy_measures_after_every_epoch():
    images, labels = digits(32), np.arange(32) % 2
    model = helpers.compile_for_training(tiny_classifier(), {"epochs": 3, "learning_rate": 1e-2, "schedule": "constant"}, 4)
    clock = recipes.EpochTestAccuracy(images, labels, "tiny")
    model.fit(helpers.make_dataset(images, labels, 8), epochs=3, verbose=0, callbacks=[clock])
    assert len(clock.epoch_seconds) == len(clock.epoch_cpu_seconds) == len(clock.test_accuracy) == 3
    assert clock.test_accuracy[-1] == helpers.accuracy(model.predict(images, verbose=0), labels)


def test_section_timer_sections_add_up_to_the_total():
    timer = helpers.SectionTimer()
    timer.start("first")
    time.sleep(0.05)
    timer.start("second")
    busy_until = time.process_time() + 0.2
    while time.process_time() < busy_until:  # 0.2 s of CPU work
        pass
    timer.start("first")
    time.sleep(0.02)
    totals = timer.totals()
    assert set(totals["section_seconds"]) == {"first", "second"}
    assert totals["section_seconds"]["first"] >= 0.07
    assert sum(totals["section_seconds"].values()) == pytest.approx(totals["total_seconds"], abs=0.1)
    assert sum(totals["section_cpu_seconds"].values()) == pytest.approx(totals["cpu_seconds"], abs=0.1)
    assert totals["section_cpu_seconds"]["second"] >= 0.2


def test_cpu_description_names_the_cores_and_the_vector_instructions():
    description = helpers.cpu_description()
    assert re.fullmatch(r".+, \d+ cores(, (AVX|AVX2|AVX-512|AVX-512 and AMX))?", description), description
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file() and " avx2" in cpuinfo.read_text():
        assert "AVX" in description


def test_trial_logger_counts_trials_across_the_copies_the_tuner_makes(capsys):
    import copy

    logger = helpers.TrialLogger(max_trials=3)
    for _ in range(2):
        copy.deepcopy(logger).on_train_end({"val_accuracy": 0.98})
    out = capsys.readouterr().out
    assert "trial  1/3" in out and "trial  2/3" in out


def test_tuner_trials_keep_the_order_they_ran_in_and_drop_unscored_ones():
    class Trial:
        def __init__(self, trial_id, score, values):
            self.trial_id, self.score = trial_id, score
            self.hyperparameters = type("Values", (), {"values": values})()

    class Tuner:
        oracle = type("Oracle", (), {"trials": {"b": Trial("01", 0.97, {"dense_units": 128}),
                                                "a": Trial("00", 0.98, {"dense_units": 256}),
                                                "c": Trial("02", None, {"dense_units": 64})}})()

    trials = helpers.tuner_trials(Tuner())
    assert trials == [{"trial": 1, "val_accuracy": 0.98, "dense_units": 256},
                      {"trial": 2, "val_accuracy": 0.97, "dense_units": 128}]
    table = helpers.trials_table_markdown(trials)
    assert table.splitlines()[0] == "| trial | val_accuracy | dense_units |"
    assert table.splitlines()[2].startswith("| 1 | 0.98 | 256 |")


def test_model_cost_counts():
    model = tiny_classifier()
    assert helpers.count_params(model) == 784 * 10 + 10
    assert recipes.count_multiply_adds(model) == 7840
    assert recipes.training_gflops(1_000_000, 1000) == pytest.approx(6.0)


# ---- evaluation -------------------------------------------------------------------------

def test_accuracy_takes_probabilities_or_labels():
    probabilities = np.eye(10)[[1, 2, 3, 4]]
    assert helpers.accuracy(probabilities, [1, 2, 3, 0]) == 0.75
    assert helpers.accuracy([1, 2, 3, 0], [1, 2, 3, 4]) == 0.75
    with pytest.raises(ValueError, match="one prediction per label"):
        helpers.accuracy(probabilities, [1, 2])


def test_cross_entropy_matches_keras():
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(10), size=50).astype(np.float32)
    labels = rng.integers(0, 10, size=50)
    expected = float(keras.losses.SparseCategoricalCrossentropy()(labels, probabilities))
    assert helpers.cross_entropy(probabilities, labels) == pytest.approx(expected, rel=1e-5)


def test_perturb_images():
    images = digits(4)
    np.testing.assert_array_equal(helpers.perturb_images(images, "blur", 0), images)
    quarter_turn = helpers.perturb_images(images, "rotation", 90)
    np.testing.assert_allclose(quarter_turn[..., 0], np.rot90(images[..., 0], k=1, axes=(1, 2)), atol=1e-5)
    shifted = helpers.perturb_images(images, "shift", 2)
    np.testing.assert_allclose(shifted[:, 2:, 2:], images[:, :-2, :-2], atol=1e-6)
    blurred = helpers.perturb_images(images, "blur", 1.5)
    assert blurred.max() < images.max() and blurred.sum() == pytest.approx(images.sum(), rel=0.02)
    noisy = helpers.perturb_images(np.full((2, 28, 28, 1), 0.5, np.float32), "noise", 0.1, seed=1)
    assert 0.08 < noisy.std() < 0.12 and noisy.min() >= 0 and noisy.max() <= 1
    with pytest.raises(ValueError, match="rotation, shift, blur, noise"):
        helpers.perturb_images(images, "flip", 1)


def test_most_confused_pairs_and_classification_report_csv():
    matrix = np.eye(10, dtype=int) * 100
    matrix[4, 9], matrix[7, 2], matrix[3, 5] = 6, 3, 3
    assert helpers.most_confused_pairs(matrix, count=2) == [(4, 9, 6), (3, 5, 3)]
    report = {label: {"precision": 1.0, "recall": 0.5, "f1-score": 2 / 3, "support": 10} for label in helpers.CLASS_NAMES}
    csv = helpers.classification_report_csv({"m": report})
    lines = csv.splitlines()
    assert lines[0] == "model,digit,precision,recall,f1,support" and len(lines) == 11
    assert lines[1] == "m,0,1.0000,0.5000,0.6667,10"


# ---- plots and results files ------------------------------------------------------------

def test_figure_folder_saves_and_closes_the_figure(tmp_path):
    figures = helpers.FigureFolder(tmp_path / "figures")
    figure, axis = plt.subplots()
    axis.plot([0, 1], [1, 0])
    assert figures.show(figure, "line") is None
    assert (tmp_path / "figures" / "line.png").read_bytes()[:4] == b"\x89PNG"
    assert not plt.get_fignums()


@pytest.mark.parametrize("make_figure", [
    lambda: helpers.plot_grouped_bars({"a": {"x": 90.0, "y": 97.0}, "b": {"x": 85.0, "y": 99.0}}, "t", "%"),
    lambda: helpers.plot_robustness({"blur": {"a": [(0, 0.99), (1, 0.9)], "b": [(0, 0.98), (1, 0.95)]}}, {"blur": "sigma"}),
    lambda: helpers.plot_classification_report({"a": {label: {"precision": 0.99, "recall": 0.98, "f1-score": 0.985}
                                                      for label in helpers.CLASS_NAMES}}),
])
def test_more_plots_write_files(tmp_path, make_figure):
    figure = make_figure()
    assert helpers.save_fig(figure, "plot", tmp_path).stat().st_size > 5000
    plt.close(figure)


def test_atomic_write_keeps_the_old_file_when_the_block_fails(tmp_path):
    path = tmp_path / "data.json"
    helpers.write_text(path, "old")
    with pytest.raises(RuntimeError):
        with helpers.atomic_write(path) as temporary:
            temporary.write_text("half")
            raise RuntimeError("stopped")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["data.json"]
    with helpers.atomic_write(path) as temporary:
        assert temporary.suffix == ".json" and temporary.parent == tmp_path
        temporary.write_text("new")
    assert path.read_text() == "new"


def test_read_json_and_load_saved_model_name_the_file_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.json.*make run"):
        helpers.read_json(tmp_path / "missing.json", "training history")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"broken\.json.*make run"):
        helpers.read_json(tmp_path / "broken.json")
    helpers.write_json({"a": 1}, tmp_path / "good.json")
    assert helpers.read_json(tmp_path / "good.json") == {"a": 1}
    with pytest.raises(FileNotFoundError, match=r"dnn\.keras.*make run"):
        helpers.load_saved_model(tmp_path / "dnn.keras")
    (tmp_path / "broken.keras").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"broken\.keras.*make run"):
        helpers.load_saved_model(tmp_path / "broken.keras")
    model = tiny_classifier()
    model.save(tmp_path / "tiny.keras")
    assert helpers.count_params(helpers.load_saved_model(tmp_path / "tiny.keras")) == helpers.count_params(model)


def test_replace_between_markers_keeps_the_rest(tmp_path):
    path = tmp_path / "README.md"
    path.write_text("head\n<!-- a -->\nold\n<!-- b -->\ntail\n")
    helpers.replace_between_markers(path, "new", "<!-- a -->", "<!-- b -->")
    assert path.read_text() == "head\n<!-- a -->\nnew\n<!-- b -->\ntail\n"


def test_conclusion_names_the_most_accurate_and_the_most_robust_model_and_cpu_minutes():
    metrics = {
        "run": {"test_images": 10000, "total_seconds": 600.0, "cpu_seconds": 1080.0, "cpu": "AMD EPYC, 2 cores"},
        "models": {"resnet": {"test_accuracy": 0.997, "test_loss": 0.01, "params": 1, "epochs": 1, "train_seconds": 1},
                   "resnet_seed2": {"test_accuracy": 0.996, "test_loss": 0.01, "params": 1, "epochs": 1, "train_seconds": 1},
                   "cnn_basic": {"test_accuracy": 0.991, "test_loss": 0.03, "params": 1, "epochs": 1, "train_seconds": 1}},
        "robustness": {"blur": {"amounts": [0, 2], "models": {"resnet": [0.997, 0.2], "resnet_seed2": [0.996, 0.9],
                                                              "cnn_basic": [0.991, 0.8]}}},
    }
    text = helpers.conclusion_markdown(metrics)
    assert "**resnet** is the most accurate" in text
    assert "The most robust model is **resnet_seed2**: 94.8%" in text
    assert "score 99.65% on average (from 99.60% to 99.70%" in text
    assert "10.0 minutes (18.0 CPU-minutes)" in text
    metrics["robustness"]["blur"]["models"]["resnet"] = [0.997, 0.951]
    assert "The most accurate model is also the most robust: **resnet** averages 97.4%" in helpers.conclusion_markdown(metrics)
