"""Saliency (saliency.py): integrated gradients and occlusion land where a model looks, add up to what the model
says, work for an ensemble and an adapted last layer, and the display map is what the notebook and the pad draw."""

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import helpers  # noqa: E402
import saliency  # noqa: E402

PIXEL = (10, 17)  # the one pixel the one-pixel model reads
OTHER_PIXEL = (20, 5)


def one_pixel_model(pixel=PIXEL, digit=3, weight=4.0):
    """Flatten, Dense(10, softmax) whose only non-zero weight links `pixel` to `digit`: it looks at one pixel."""
    inputs = keras.Input(shape=(28, 28, 1))
    head = keras.layers.Dense(10, activation="softmax")
    model = keras.Model(inputs, head(keras.layers.Flatten()(inputs)))
    kernel = np.zeros((28 * 28, 10), dtype=np.float32)
    kernel[pixel[0] * 28 + pixel[1], digit] = weight
    head.set_weights([kernel, np.zeros(10, dtype=np.float32)])
    return model


def random_images(count, seed=0):
    return np.random.default_rng(seed).uniform(0.0, 1.0, (count, 28, 28, 1)).astype(np.float32)


@pytest.fixture(scope="module")
def small_cnn(mnist_dir):
    """A small CNN trained for a few hundred steps on real MNIST: confident and far from linear."""
    (train_images, train_labels), _ = helpers.load_mnist(mnist_dir)
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(28, 28, 1))
    hidden = keras.layers.Conv2D(8, 3, activation="relu")(inputs)
    hidden = keras.layers.MaxPooling2D()(hidden)
    hidden = keras.layers.Dense(32, activation="relu")(keras.layers.Flatten()(hidden))
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(hidden))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(helpers.to_model_input(train_images[:8000]), train_labels[:8000], batch_size=64, epochs=1, verbose=0)
    return model


@pytest.fixture(scope="module")
def test_digits(mnist_dir):
    _, (test_images, test_labels) = helpers.load_mnist(mnist_dir)
    return helpers.to_model_input(test_images[:8]), test_labels[:8].astype(int)


# ==================== Integrated gradients ============================================


@pytest.mark.parametrize("target", [3, 5])
def test_saliency_of_a_model_that_reads_one_pixel_lands_on_that_pixel(target):
    images = random_images(4)
    attributions = saliency.integrated_gradients(one_pixel_model(), images, target)
    assert attributions.shape == (4, 28, 28) and attributions.dtype == np.float32
    for attribution in attributions:
        assert np.unravel_index(np.abs(attribution).argmax(), attribution.shape) == PIXEL
        others = np.delete(attribution.ravel(), PIXEL[0] * 28 + PIXEL[1])
        assert np.all(others == 0.0)  # no gradient reaches a pixel the model does not read
    # Ink there is evidence for 3, and against 5 (it takes probability from every other digit).
    assert np.all(np.sign(attributions[:, PIXEL[0], PIXEL[1]]) == (1 if target == 3 else -1))
    maps = saliency.heatmap(attributions)
    assert np.all(maps[:, PIXEL[0], PIXEL[1]] == 1.0) and maps.sum() == pytest.approx(4.0)


def test_attributions_add_up_to_the_change_of_log_probability(small_cnn, test_digits):
    # Completeness (Sundararajan et al.): the attributions sum to f(image) - f(baseline), up to the discretization.
    images, _ = test_digits
    predicted = saliency.predicted_digits(small_cnn, images)
    attributions = saliency.integrated_gradients(small_cnn, images, steps=128)
    at_images = saliency.log_probabilities(small_cnn, images)[np.arange(len(images)), predicted]
    at_black = saliency.log_probabilities(small_cnn, np.zeros_like(images))[np.arange(len(images)), predicted]
    np.testing.assert_allclose(attributions.sum(axis=(1, 2)), at_images - at_black, rtol=0.03, atol=0.03)
    # The default target is the digit each image is read as; a black baseline leaves the background at zero.
    np.testing.assert_array_equal(attributions, saliency.integrated_gradients(small_cnn, images, predicted,
                                                                              steps=128))
    assert np.all(attributions[images[..., 0] == 0.0] == 0.0)


def test_a_coarse_path_still_roughly_adds_up(small_cnn, test_digits):
    images, _ = test_digits
    predicted = saliency.predicted_digits(small_cnn, images)
    total = saliency.integrated_gradients(small_cnn, images, batch_size=40).sum(axis=(1, 2))  # 32 steps, odd batches
    expected = (saliency.log_probabilities(small_cnn, images)[np.arange(len(images)), predicted]
                - saliency.log_probabilities(small_cnn, np.zeros_like(images))[np.arange(len(images)), predicted])
    np.testing.assert_allclose(total, expected, rtol=0.15, atol=0.1)


def test_an_ensemble_is_explained_through_its_mean_probability(small_cnn, test_digits):
    images = random_images(3, seed=1)
    ensemble = [one_pixel_model(PIXEL), one_pixel_model(OTHER_PIXEL)]
    attributions = saliency.integrated_gradients(ensemble, images, 3, steps=64)
    for attribution in attributions:
        looked = set(zip(*np.nonzero(attribution)))
        assert looked == {PIXEL, OTHER_PIXEL} and np.all(attribution[[PIXEL[0], OTHER_PIXEL[0]],
                                                                     [PIXEL[1], OTHER_PIXEL[1]]] > 0)
    # The ensemble's log-probabilities are the log of its members' mean probabilities, and complete as one model's.
    mean = np.mean([member.predict(images, verbose=0) for member in ensemble], axis=0)
    np.testing.assert_allclose(saliency.log_probabilities(ensemble, images), np.log(mean), atol=1e-5)
    change = saliency.log_probabilities(ensemble, images)[:, 3] - saliency.log_probabilities(ensemble, 0 * images)[:, 3]
    np.testing.assert_allclose(attributions.sum(axis=(1, 2)), change, rtol=0.01)
    # Two copies of one model are that model; a dict of models (as a reader holds them) is its members.
    digits, _ = test_digits
    np.testing.assert_allclose(saliency.integrated_gradients([small_cnn, small_cnn], digits, 7),
                               saliency.integrated_gradients(small_cnn, digits, 7), atol=1e-6)
    np.testing.assert_array_equal(saliency.integrated_gradients({"a": ensemble[0], "b": ensemble[1]}, images, 3,
                                                                steps=64), attributions)


def test_an_adapted_last_layer_is_what_is_explained():
    # Heads (an adapted reader's re-fitted last layers) replace the trained ones: here one that reads the other pixel.
    images = random_images(2, seed=2)
    model, moved = one_pixel_model(PIXEL), one_pixel_model(OTHER_PIXEL)
    own = saliency.integrated_gradients(model, images, 3, heads=[None])
    np.testing.assert_array_equal(own, saliency.integrated_gradients(model, images, 3))
    np.testing.assert_array_equal(own, saliency.integrated_gradients(model, images, 3,
                                                                     heads=[model.layers[-1].get_weights()]))
    adapted = saliency.integrated_gradients(model, images, 3, heads=[moved.layers[-1].get_weights()])
    np.testing.assert_allclose(adapted, saliency.integrated_gradients(moved, images, 3), atol=1e-7)
    assert np.all(adapted[:, PIXEL[0], PIXEL[1]] == 0.0)


# ==================== Occlusion and the display map ====================================


def test_occlusion_finds_the_one_pixel_too():
    images = random_images(2, seed=3)
    maps = saliency.occlusion(one_pixel_model(), images, 3, patch=4, stride=2)
    assert maps.shape == (2, 28, 28)
    for occluded, image in zip(maps, images):
        # Every square over the pixel hides it; the map is the full drop there and nothing away from it.
        drop = (saliency.log_probabilities(one_pixel_model(), image[np.newaxis])[0, 3]
                - saliency.log_probabilities(one_pixel_model(), np.zeros((1, 28, 28, 1)))[0, 3])
        assert occluded[PIXEL] == pytest.approx(drop, rel=1e-5) and occluded.max() == pytest.approx(drop, rel=1e-5)
        rows, columns = np.nonzero(np.abs(occluded) > 1e-6 * drop)  # above float32's rounding of separate batches
        assert np.abs(rows - PIXEL[0]).max() <= 3 and np.abs(columns - PIXEL[1]).max() <= 3


def test_heatmap_scales_each_map_by_a_percentile_of_its_absolute_values():
    attributions = np.zeros((2, 28, 28))
    attributions[0].flat[:100] = np.linspace(-2.0, 1.0, 100)  # the 1% most extreme are clipped, signs dropped
    attributions[1, 3, 4] = -0.5  # one pixel: its percentile is 0, so the maximum scales it
    maps = saliency.heatmap(attributions, percentile=99.0)
    assert maps.dtype == np.float32 and maps.min() == 0.0 and maps.max() == 1.0
    scale = np.percentile(np.abs(attributions[0]), 99.0)
    np.testing.assert_allclose(maps[0], np.clip(np.abs(attributions[0]) / scale, 0, 1), rtol=1e-6)
    assert maps[1, 3, 4] == 1.0 and maps[1].sum() == 1.0
    assert saliency.heatmap(np.zeros((28, 28))).max() == 0.0  # nothing to show: all dark, no division by zero
    assert saliency.heatmap(attributions[0]).shape == (28, 28)


@pytest.mark.parametrize("call, message", [
    (lambda model: saliency.integrated_gradients(model, np.full((1, 28, 28, 1), 255.0)), "the models expect"),
    (lambda model: saliency.integrated_gradients(model, random_images(2), [3, 12]), "target_digits of shape"),
    (lambda model: saliency.integrated_gradients(model, random_images(2), 3, steps=0), "steps=0"),
    (lambda model: saliency.integrated_gradients(model, random_images(2), 3, baseline=np.zeros(5)), "baseline"),
    (lambda model: saliency.integrated_gradients({}, random_images(2), 3), "models is a dict"),
    (lambda model: saliency.integrated_gradients(model, random_images(2), 3, heads=[None, None]), "2 heads for 1"),
    (lambda model: saliency.occlusion(model, random_images(1), 3, patch=29), "patch=29"),
    (lambda model: saliency.heatmap(np.zeros((28, 27))), r"shape \(28, 27\)"),
    (lambda model: saliency.heatmap(np.zeros((28, 28)), percentile=0), "percentile=0"),
])
def test_bad_arguments_are_refused_by_name(call, message):
    with pytest.raises(ValueError, match=message):
        call(one_pixel_model())


def test_a_model_without_a_softmax_head_is_refused():
    inputs = keras.Input(shape=(28, 28, 1))
    model = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(inputs)), name="raw_logits")
    with pytest.raises(ValueError, match="model 'raw_logits' ends in Dense; .* Dense\\(10, activation='softmax'\\)"):
        saliency.integrated_gradients(model, random_images(1), 3)
