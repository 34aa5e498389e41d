"""The reader: temperature scaling, calibration error, scores, thresholds, verdicts and the reader's files.

Fast: synthetic logits and Keras models whose probabilities the test chooses (conftest.fixed_model),
plus one check of temperature scaling on real MNIST digits with a committed model (needs MNIST_DIR).
"""

import json
import subprocess
import sys

import numpy as np
import pytest

import reader
from conftest import PROJECT_ROOT

# Keras trips over NumPy 2's copy keyword when it turns a variable into an array (model.save, and
# keras.ops.convert_to_numpy in reader.model_outputs); that is Keras' business, not this test's.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

SURE = {7: 0.981, 1: 0.012, 9: 0.004}
UNSURE = {7: 0.55, 1: 0.40, 9: 0.02}
IMAGES = np.zeros((3, 28, 28), dtype=np.float32)  # what fixed models see does not matter


# ==================== Temperature scaling =============================================


def overconfident_logits(count, rng, sharpening=4.0):
    """Logits `sharpening` times too sure: labels are drawn from softmax(true logits), the model says 4x those."""
    true_logits = rng.normal(0.0, 1.5, size=(count, 10))
    cumulative = np.cumsum(reader.softmax(true_logits).astype(np.float64), axis=1)
    labels = np.minimum((rng.random((count, 1)) > cumulative).sum(axis=1), 9)  # inverse-CDF draws
    return sharpening * true_logits + rng.normal(0.0, 0.5, size=(count, 10)), labels


def test_temperature_scaling_lowers_the_held_out_nll():
    logits, labels = overconfident_logits(4000, np.random.default_rng(0))
    temperature = reader.fit_temperature(logits[:2000], labels[:2000])
    assert temperature > 1.0  # overconfident logits are cooled down (measured: 4.2 for 4x sharpening)
    held_out = reader.negative_log_likelihood(logits[2000:], labels[2000:])
    calibrated = reader.negative_log_likelihood(logits[2000:], labels[2000:], temperature)
    assert calibrated < held_out - 0.5  # measured: 3.18 -> 1.62
    # And it lowers the calibration error, without changing which digit is picked.
    before, after = reader.softmax(logits[2000:]), reader.softmax(logits[2000:], temperature)
    assert (reader.expected_calibration_error(after, labels[2000:])
            < reader.expected_calibration_error(before, labels[2000:]))
    np.testing.assert_array_equal(before.argmax(axis=1), after.argmax(axis=1))


def test_underconfident_logits_get_a_temperature_below_one():
    logits, labels = overconfident_logits(2000, np.random.default_rng(1), sharpening=0.3)
    assert reader.fit_temperature(logits, labels) < 1.0


def test_temperature_scaling_of_a_saved_model_on_real_validation_digits(mnist_dir):
    import helpers

    model_path = PROJECT_ROOT / "saved_models" / "cnn_basic.keras"
    if not model_path.is_file():
        pytest.skip(f"no {model_path}; run `make run` to train and save the models")
    (train_images, train_labels), _ = helpers.load_mnist(mnist_dir)
    _, (validation_inputs, validation_labels) = helpers.split_validation(
        helpers.to_model_input(train_images), train_labels, 0.2)
    _, logits = reader.model_outputs(reader.load_model(model_path), validation_inputs)
    fit_logits, fit_labels = logits[:6000], validation_labels[:6000]
    held_logits, held_labels = logits[6000:12000], validation_labels[6000:12000]
    temperature = reader.fit_temperature(fit_logits, fit_labels)
    before = reader.negative_log_likelihood(held_logits, held_labels)
    after = reader.negative_log_likelihood(held_logits, held_labels, temperature)
    # Measured: T 1.65, held-out NLL 0.0385 -> 0.0299. A model calibrated already (T about 1) may only tie.
    assert after < before or (abs(temperature - 1.0) < 0.05 and after <= before + 1e-4)


@pytest.mark.parametrize("logits, labels", [
    (np.zeros((5, 9)), np.zeros(5, dtype=int)),  # nine classes
    (np.zeros((5, 10)), np.zeros(4, dtype=int)),  # a label short
    (np.zeros(10), np.zeros(1, dtype=int)),  # one row, not (1, 10)
    (np.zeros((0, 10)), np.zeros(0, dtype=int)),  # nothing to fit on
])
def test_fit_temperature_refuses_bad_shapes(logits, labels):
    with pytest.raises(ValueError, match="pass \\(N, 10\\) logits and N integer labels"):
        reader.fit_temperature(logits, labels)


def test_negative_log_likelihood_and_softmax_by_hand():
    logits = np.array([[np.log(0.5), np.log(0.25), np.log(0.25)] + [-np.inf] * 7])
    np.testing.assert_allclose(reader.softmax(logits)[0, :3], [0.5, 0.25, 0.25], rtol=1e-6)
    assert reader.negative_log_likelihood(logits, [1]) == pytest.approx(np.log(4))
    # Temperature 2 takes the square root of each probability, renormalized.
    expected = np.sqrt([0.5, 0.25, 0.25]) / np.sqrt([0.5, 0.25, 0.25]).sum()
    np.testing.assert_allclose(reader.softmax(logits, 2.0)[0, :3], expected, rtol=1e-6)


def test_log_mean_probabilities_is_the_log_of_the_members_mean():
    rng = np.random.default_rng(2)
    members = [rng.normal(size=(4, 10)) for _ in range(3)]
    mean = np.mean([reader.softmax(logits) for logits in members], axis=0)
    np.testing.assert_allclose(reader.softmax(reader.log_mean_probabilities(members)), mean, rtol=1e-5)


# ==================== Calibration error ===============================================


def rows_with_confidence(confidence, count, correct, predicted=3):
    """`count` rows of probabilities, `confidence` on `predicted`, with labels that are right `correct` times."""
    row = np.full(10, (1.0 - confidence) / 9)
    row[predicted] = confidence
    labels = np.array([predicted] * correct + [(predicted + 1) % 10] * (count - correct))
    return np.tile(row, (count, 1)), labels


def test_expected_calibration_error_is_zero_when_confidence_matches_accuracy():
    parts = [rows_with_confidence(0.8, 10, 8), rows_with_confidence(0.6, 10, 6), rows_with_confidence(1.0, 5, 5)]
    probabilities = np.concatenate([part[0] for part in parts])
    labels = np.concatenate([part[1] for part in parts])
    assert reader.expected_calibration_error(probabilities, labels) == pytest.approx(0.0, abs=1e-9)


def test_expected_calibration_error_of_a_known_case():
    # 10 answers at 90% of which 5 are right (gap 0.4), 10 at 60% of which 6 are right (gap 0): ECE 0.2.
    parts = [rows_with_confidence(0.9, 10, 5), rows_with_confidence(0.6, 10, 6)]
    probabilities = np.concatenate([part[0] for part in parts])
    labels = np.concatenate([part[1] for part in parts])
    assert reader.expected_calibration_error(probabilities, labels) == pytest.approx(0.2)
    mean_confidence, accuracy, counts = reader.reliability_bins(probabilities, labels, bins=10)
    assert counts.tolist() == [0, 0, 0, 0, 0, 10, 0, 0, 10, 0]  # bins (0.5, 0.6] and (0.8, 0.9]
    np.testing.assert_allclose(mean_confidence[[5, 8]], [0.6, 0.9])
    np.testing.assert_allclose(accuracy[[5, 8]], [0.6, 0.5])


def test_reliability_bins_count_every_answer_once():
    rng = np.random.default_rng(3)
    probabilities = reader.softmax(rng.normal(0.0, 3.0, size=(1000, 10)))
    labels = rng.integers(0, 10, size=1000)
    for bins in (1, 10, 15):
        mean_confidence, accuracy, counts = reader.reliability_bins(probabilities, labels, bins)
        assert len(counts) == bins and counts.sum() == 1000
        assert np.all((accuracy >= 0) & (accuracy <= 1))
        filled = counts > 0
        edges = np.arange(bins + 1) / bins
        # Each bin's mean confidence lies within the bin.
        assert np.all(mean_confidence[filled] > edges[:-1][filled] - 1e-6)
        assert np.all(mean_confidence[filled] <= edges[1:][filled] + 1e-6)


# ==================== Scores ==========================================================


def test_feature_density_distance_is_zero_at_a_class_mean_and_grows_away_from_it():
    rng = np.random.default_rng(4)
    labels = np.repeat(np.arange(10), 200)
    features = 10.0 * np.eye(10)[labels] + rng.normal(0.0, 1.0, size=(2000, 10))
    density = reader.FeatureDensity.fit(features, labels)
    np.testing.assert_allclose(density.means, 10.0 * np.eye(10), atol=0.3)
    np.testing.assert_allclose(density.distance(density.means), 0.0, atol=1e-6)
    direction = rng.normal(size=10)
    steps = [0.0, 0.5, 1.0, 2.0, 3.0]
    distances = density.distance(np.stack([density.means[3] + step * direction for step in steps]))
    assert np.all(np.diff(distances) > 0)


def test_feature_density_distance_by_hand():
    # With the identity as precision, the Mahalanobis distance is the Euclidean one, to the nearest mean.
    density = reader.FeatureDensity(np.array([[0.0, 0.0], [10.0, 0.0]]), np.eye(2))
    np.testing.assert_allclose(density.distance([[3.0, 4.0], [9.0, 0.0], [0.0, 0.0]]), [5.0, 1.0, 0.0])
    # A precision of 4 in the first axis doubles distances along it.
    density = reader.FeatureDensity(np.zeros((1, 2)), np.diag([4.0, 1.0]))
    np.testing.assert_allclose(density.distance([[1.5, 0.0], [0.0, 1.5]]), [3.0, 1.5])


def member_outputs(*member_probabilities):
    """Members' (features, logits) for one input each: logits log(probabilities), two made-up features."""
    outputs = []
    for probabilities in member_probabilities:
        if isinstance(probabilities, dict):
            rest = (1.0 - sum(probabilities.values())) / (10 - len(probabilities))
            probabilities = [probabilities.get(digit, rest) for digit in range(10)]
        outputs.append((np.zeros((1, 2)), np.log(np.asarray(probabilities, dtype=np.float64))[np.newaxis]))
    return outputs


def test_probability_score_is_the_calibrated_top_probability():
    rng = np.random.default_rng(5)
    outputs = [(np.zeros((6, 2)), rng.normal(0.0, 2.0, size=(6, 10))) for _ in range(3)]
    logits = [member_logits for _, member_logits in outputs]
    np.testing.assert_allclose(reader.scores("probability", outputs, 1.7),
                               reader.calibrated_probabilities(logits, 1.7).max(axis=1), rtol=1e-6)
    np.testing.assert_allclose(reader.scores("probability", outputs[:1], 1.7),
                               reader.softmax(logits[0], 1.7).max(axis=1), rtol=1e-6)
    np.testing.assert_allclose(reader.scores("energy", outputs[:1]),
                               np.log(np.exp(logits[0]).sum(axis=1)), rtol=1e-6)


def test_agreement_score_is_zero_for_identical_members_and_negative_when_they_disagree():
    same = reader.scores("agreement", member_outputs(SURE, SURE, SURE))
    assert same == pytest.approx([0.0], abs=1e-6)
    disagree = reader.scores("agreement", member_outputs({4: 0.9}, {9: 0.9}))
    assert disagree[0] < -0.3  # the mutual information of two members sure of different digits (measured: 0.5)
    slightly = reader.scores("agreement", member_outputs({4: 0.9}, {4: 0.7}))
    assert disagree[0] < slightly[0] < 0.0


def test_unknown_score_or_missing_densities_are_refused():
    with pytest.raises(ValueError, match="score 'surprise' is unknown; use one of probability, energy"):
        reader.scores("surprise", member_outputs(SURE))
    with pytest.raises(ValueError, match="one FeatureDensity per member"):
        reader.scores("feature_distance", member_outputs(SURE, SURE), densities=None)


def test_feature_distance_score_averages_the_members_distances():
    densities = [reader.FeatureDensity(np.zeros((1, 2)), np.eye(2)), reader.FeatureDensity(np.ones((1, 2)), np.eye(2))]
    outputs = [(np.array([[3.0, 4.0]]), np.zeros((1, 10))), (np.array([[1.0, 2.0]]), np.zeros((1, 10)))]
    np.testing.assert_allclose(reader.scores("feature_distance", outputs, densities=densities), [-(5.0 + 1.0) / 2])


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.99])
def test_keep_threshold_keeps_the_requested_share(keep):
    digit_scores = np.random.default_rng(6).normal(size=10_000)
    threshold = reader.keep_threshold(digit_scores, keep)
    assert np.mean(digit_scores >= threshold) == pytest.approx(keep, abs=1e-3)


def test_keep_threshold_refuses_a_share_out_of_range():
    assert reader.keep_threshold([3.0, 1.0, 2.0], 1.0) == 1.0  # keep all: the lowest score
    for keep in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="share of digits to keep"):
            reader.keep_threshold([1.0, 2.0], keep)


# ==================== The reader and its verdicts =====================================


def test_a_confident_model_reads_a_digit(fixed_model):
    digit_reader = reader.Reader({"sure": fixed_model(SURE)}, {"sure": 1.0})
    readings = digit_reader.read(IMAGES)
    assert len(readings) == 3
    reading = readings[0]
    assert reading.verdict == "digit" and reading.digit == 7 and reading.candidates == [7]
    assert reading.score == pytest.approx(0.981, abs=1e-6)
    assert reading.text == "7 (98.1%)"
    assert reading.as_dict() == {"digit": 7, "verdict": "digit", "candidates": [7],
                                 "probabilities": [round(float(value), 6) for value in reading.probabilities],
                                 "score": round(reading.score, 6)}
    assert digit_reader.label == "sure" and digit_reader.temperature == 1.0
    json.dumps(reading.as_dict())  # plain JSON, as predict.py --json prints it


def test_two_close_digits_are_not_sure(fixed_model):
    reading = reader.Reader({"unsure": fixed_model(UNSURE)}, {"unsure": 1.0}).read(IMAGES)[0]
    assert reading.verdict == "not sure" and reading.digit is None and reading.candidates == [7, 1]
    assert reading.text == "not sure: 7 or 1 (55.0%, 40.0%)"
    assert reading.as_dict()["digit"] is None and reading.as_dict()["candidates"] == [7, 1]


def test_a_score_below_the_threshold_is_not_a_digit(fixed_model):
    model = fixed_model(SURE)
    reading = reader.Reader({"sure": model}, {"sure": 1.0}, threshold=0.99).read(IMAGES)[0]
    assert reading.verdict == "not a digit" and reading.digit is None and reading.candidates == []
    assert reading.text == "not a digit" and reading.score == pytest.approx(0.981, abs=1e-6)
    assert reading.probabilities.argmax() == 7  # the probabilities are still there, for "looks most like 7"
    # The threshold is on the calibrated score: at temperature 0.5 the same model is sure enough.
    cooled = reader.Reader({"sure": model}, {"sure": 0.5}, threshold=0.99).read(IMAGES)[0]
    assert cooled.verdict == "digit" and cooled.digit == 7 and cooled.score > 0.99


def test_members_that_pick_different_digits_are_not_sure(fixed_model):
    # The mean gives 4 64.5% and 9 17.6%: close enough to "4" by the probabilities alone,
    # but the second member picks 9, so the reader names both.
    members = {"four": fixed_model({4: 0.99}), "nine": fixed_model({9: 0.35, 4: 0.30})}
    ensemble = reader.Reader(members, {name: 1.0 for name in members}, ensemble_temperature=1.0)
    reading = ensemble.read(IMAGES)[0]
    assert reading.probabilities[9] < reader.NOT_SURE_SECOND_PROBABILITY
    assert reading.verdict == "not sure" and reading.candidates == [4, 9] and reading.digit is None
    assert ensemble.label == "ensemble of four, nine"
    agreeing = {"four": members["four"], "also_four": fixed_model({4: 0.9}, "also_four")}
    reading = reader.Reader(agreeing, {name: 1.0 for name in agreeing}).read(IMAGES)[0]
    assert reading.verdict == "digit" and reading.digit == 4


def test_the_reader_reads_images_and_strokes_as_prepared(fixed_model):
    digit_reader = reader.Reader({"sure": fixed_model(SURE)}, {"sure": 1.0})
    image = np.zeros((100, 100))
    image[20:80, 45:55] = 1.0
    assert digit_reader.read_image(image).digit == 7
    assert digit_reader.read_strokes(reader.EXAMPLE_STROKES).digit == 7
    with pytest.raises(ValueError, match="the drawing is empty"):
        digit_reader.read_strokes([[(-100, -100)]])
    drawing = reader.strokes_to_image(reader.EXAMPLE_STROKES)
    np.testing.assert_array_equal(reader.prepare_strokes(reader.EXAMPLE_STROKES),
                                  reader.prepare_digit_image(drawing, ink="light"))


def test_a_reader_refuses_bad_settings(fixed_model):
    model = fixed_model(SURE)
    with pytest.raises(ValueError, match="at least one model"):
        reader.Reader({}, {})
    with pytest.raises(ValueError, match=r"no temperature for \['sure'\]"):
        reader.Reader({"sure": model}, {"other": 1.0})
    with pytest.raises(ValueError, match="score 'vibes' is unknown"):
        reader.Reader({"sure": model}, {"sure": 1.0}, score="vibes")


# ==================== The reader's files ==============================================


def test_settings_round_trip(fixed_model):
    models = {"sure": fixed_model(SURE), "unsure": fixed_model(UNSURE, "unsure")}
    original = reader.Reader(models, {"sure": 1.3, "unsure": 0.8}, ensemble_temperature=1.1, score="energy",
                             threshold=2.5, not_sure_second_probability=0.25)
    settings = json.loads(json.dumps(original.settings()))  # what reader.json holds
    copy = reader.Reader.from_settings(settings, models)
    assert copy.settings() == original.settings()
    assert ([reading.as_dict() for reading in copy.read(IMAGES)]
            == [reading.as_dict() for reading in original.read(IMAGES)])


def save_reader(folder, fixed_model, **settings):
    """A folder as model.ipynb leaves saved_models/: tiny.keras and a reader.json naming it."""
    fixed_model(SURE, "tiny").save(folder / "tiny.keras")
    settings = {"members": ["tiny"], "temperatures": {"tiny": 1.0}, "ensemble_temperature": 1.0,
                "score": "probability", "threshold": 0.5, **settings}
    (folder / reader.READER_FILE).write_text(json.dumps(settings))
    return settings


def test_load_reader_reads_the_saved_settings_and_models(tmp_path, fixed_model):
    settings = save_reader(tmp_path, fixed_model)
    loaded = reader.load_reader(tmp_path)
    assert list(loaded.models) == ["tiny"] and loaded.threshold == 0.5 and loaded.score == "probability"
    assert {key: loaded.settings()[key] for key in settings} == settings
    reading = loaded.read(IMAGES)[0]
    assert reading.verdict == "digit" and reading.digit == 7
    save_reader(tmp_path, fixed_model, threshold=0.99)
    assert reader.load_reader(tmp_path).read(IMAGES)[0].verdict == "not a digit"


def test_load_reader_with_feature_densities(tmp_path, fixed_model):
    save_reader(tmp_path, fixed_model, score="feature_distance", threshold=-1.0)
    with pytest.raises(FileNotFoundError, match="reader_densities.npz"):
        reader.load_reader(tmp_path)
    # Saved as model.ipynb saves them: one means and one precision array per member, no pickle.
    features = np.zeros((1, 28 * 28))
    np.savez(tmp_path / "reader_densities.npz", **{"tiny.means": np.zeros((10, 28 * 28)),
                                                    "tiny.precision": np.eye(28 * 28)})
    loaded = reader.load_reader(tmp_path)
    np.testing.assert_allclose(loaded.densities[0].distance(features), [0.0])
    assert loaded.read(IMAGES)[0].verdict == "digit"  # blank images sit at the (zero) means: distance 0 > -1


def test_load_reader_names_the_missing_or_broken_file(tmp_path, fixed_model):
    with pytest.raises(FileNotFoundError, match=r"reader\.json: no such reader settings file.*make run"):
        reader.load_reader(tmp_path)
    (tmp_path / reader.READER_FILE).write_text("{not json")
    with pytest.raises(ValueError, match=r"reader\.json: cannot be read as JSON.*make run"):
        reader.load_reader(tmp_path)
    (tmp_path / reader.READER_FILE).write_text(json.dumps({"members": ["tiny"]}))
    fixed_model(SURE, "tiny").save(tmp_path / "tiny.keras")
    with pytest.raises(ValueError, match=r"reader\.json: lacks or garbles"):
        reader.load_reader(tmp_path)


def test_load_single_model_reader_uses_the_calibration_file_beside_the_model(tmp_path, fixed_model):
    path = tmp_path / "sure.keras"
    fixed_model(SURE, "sure").save(path)
    uncalibrated = reader.load_single_model_reader(path)
    assert uncalibrated.temperature == 1.0 and uncalibrated.threshold is None and uncalibrated.label == "sure"
    calibration = {"temperature": 2.0, "score": "probability", "threshold": 0.99, "keep_on_validation": 0.99}
    (tmp_path / "sure.calibration.json").write_text(json.dumps(calibration))
    calibrated = reader.load_single_model_reader(path)
    assert calibrated.temperature == 2.0 and calibrated.threshold == 0.99
    assert calibrated.read(IMAGES)[0].verdict == "not a digit"
    (tmp_path / "sure.calibration.json").write_text(json.dumps({"temperature": 2.0}))
    with pytest.raises(ValueError, match=r"sure\.calibration\.json: lacks or garbles"):
        reader.load_single_model_reader(path)
    with pytest.raises(FileNotFoundError, match=r"missing\.keras: no such saved model.*make run"):
        reader.load_single_model_reader(tmp_path / "missing.keras")


# ==================== Model outputs ===================================================


def test_model_outputs_give_the_logits_of_the_models_own_softmax():
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(28, 28, 1))
    hidden = keras.layers.Dense(16, activation="relu")(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(hidden))
    images = np.random.default_rng(7).random((5, 28, 28, 1)).astype(np.float32)
    features, logits = reader.model_outputs(model, images)
    assert features.shape == (5, 16) and logits.shape == (5, 10)
    np.testing.assert_allclose(reader.softmax(logits), model.predict(images, verbose=0), atol=1e-5)
    # The features are what the head sees: the hidden layer's ReLU output.
    assert features.min() >= 0.0


@pytest.mark.parametrize("head", ["no softmax", "five classes", "separate softmax"])
def test_model_outputs_need_a_dense_softmax_head(head):
    import keras

    inputs = keras.Input(shape=(28, 28, 1))
    flat = keras.layers.Flatten()(inputs)
    outputs = {"no softmax": lambda: keras.layers.Dense(10)(flat),
               "five classes": lambda: keras.layers.Dense(5, activation="softmax")(flat),
               "separate softmax": lambda: keras.layers.Softmax()(keras.layers.Dense(10)(flat))}[head]()
    model = keras.Model(inputs, outputs)
    with pytest.raises(ValueError, match=r"reader needs a model whose last layer is Dense\(10, activation='softmax'\)"):
        reader.model_outputs(model, np.zeros((1, 28, 28)))


# ==================== What reading needs, and nothing more ============================


def test_reader_and_predict_import_without_the_notebooks_packages():
    # Keras itself imports Matplotlib when it is installed (keras/src/visualization), so the test cannot ask
    # whether Matplotlib ended up loaded; it hides these packages instead, so that any import of them by
    # reader.py or predict.py fails, and then reads a digit.
    code = f"""
import sys
for name in ("anywidget", "matplotlib", "keras_tuner", "papermill", "helpers", "drawing_pad"):
    sys.modules[name] = None  # "import name" now raises ImportError
sys.path.insert(0, {str(PROJECT_ROOT)!r})
sys.argv = ["predict.py", "--help"]  # harmless, should anything read it
import keras
import numpy as np
import predict
import reader
inputs = keras.Input(shape=(28, 28, 1))
model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(inputs)))
reading = reader.Reader({{"tiny": model}}, {{"tiny": 1.0}}).read_strokes(reader.EXAMPLE_STROKES)
print(reading.verdict, predict.parse_arguments(["seven.png"]).models_dir.name)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-1] == "saved_models"
