"""benchmarks/levers.py's pieces: width and dtype variants of a saved model, the levers' changes, and
helpers.shifted_predictions (test-time augmentation, which the notebook uses too)."""

import keras
import numpy as np
import pytest
from keras import layers

import helpers
from benchmarks import levers, recipes

BASE = {"epochs": 3, "batch_size": 64, "learning_rate": 3e-3, "schedule": "one_cycle", "warmup_fraction": 0.1,
        "augmentation": {"max_degrees": 10, "elastic_alpha": 34.0, "elastic_sigma": 4.0},
        "early_stopping_patience": None,
        "train_images": 48000}


def small_resnet():
    inputs = keras.Input(shape=(28, 28, 1))
    stem = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(4, 3, strides=2, padding="same",
                                                                   use_bias=False)(inputs)))
    x = layers.BatchNormalization()(layers.Conv2D(4, 3, padding="same", use_bias=False)(stem))
    x = layers.ReLU()(layers.Add()([x, stem]))
    shortcut = layers.Conv2D(8, 1, strides=2, use_bias=False)(x)
    x = layers.Add()([layers.Conv2D(8, 3, strides=2, padding="same")(x), shortcut])
    outputs = layers.Dense(10, activation="softmax")(layers.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, outputs, name="resnet")


def small_cnn_optimized():
    inputs = keras.Input(shape=(28, 28, 1))
    x = layers.Conv2D(4, 3, padding="same", use_bias=False, kernel_regularizer=keras.regularizers.L2(1e-4))(inputs)
    x = layers.MaxPooling2D(2)(layers.ReLU()(layers.BatchNormalization()(x)))
    x = layers.MaxPooling2D(2)(layers.Conv2D(8, 3, padding="same")(x))
    outputs = layers.Dense(10, activation="softmax")(layers.Dropout(0.3)(layers.Flatten()(x)))
    return keras.Model(inputs, outputs, name="cnn_optimized")


def of_class(model, name):
    return [layer for layer in model.layers if type(layer).__name__ == name]


def test_width_scales_every_convolution_and_keeps_the_residual_additions_matching():
    model = small_resnet()
    for width, expected in ((2.0, [8, 8, 16, 16]), (0.5, [2, 2, 4, 4])):
        variant = levers.model_variant(model, width=width)
        assert sorted(layer.filters for layer in of_class(variant, "Conv2D")) == expected
        assert variant(np.zeros((2, 28, 28, 1), np.float32)).shape == (2, 10)
    assert sorted(layer.filters for layer in of_class(model, "Conv2D")) == [4, 4, 8, 8]  # the original is untouched
    assert of_class(levers.model_variant(small_cnn_optimized(), width=2.0), "Conv2D")[0].kernel_regularizer is not None
    wide = levers.model_variant(model, width=2.0)
    assert recipes.count_multiply_adds(wide) > 3 * recipes.count_multiply_adds(model)


def test_dtype_policy_reaches_every_layer():
    variant = levers.model_variant(small_cnn_optimized(), dtype_policy="mixed_bfloat16")
    assert {layer.dtype_policy.name for layer in variant.layers if not isinstance(layer, layers.InputLayer)} == {
        "mixed_bfloat16"}


def test_an_unknown_training_lever_is_refused_by_name():
    with pytest.raises(ValueError, match="'tf_data' is not a training lever"):
        levers.lever_changes("tf_data", BASE)


def test_the_other_levers_change_one_thing():
    assert levers.lever_changes("peak_x2", BASE) == {"training": {"learning_rate": 6e-3}}
    assert levers.lever_changes("peak_x0.5", BASE) == {"training": {"learning_rate": 1.5e-3}}
    assert levers.lever_changes("batch_size", BASE) == {"training": {"batch_size": 128}}
    assert levers.lever_changes("batch_size", {**BASE, "batch_size": 128}) == {"training": {"batch_size": 64}}
    assert levers.lever_changes("width_x0.5", BASE) == {"width": 0.5}
    assert levers.lever_changes("half_length_members", {**BASE, "epochs": 20}) == {"training": {"epochs": 10}, "members": 2}
    assert levers.lever_changes("early_stopping", {**BASE, "early_stopping_patience": 5}) == {
        "training": {"early_stopping_patience": None}}
    assert levers.lever_changes("early_stopping", BASE) == {"training": {"early_stopping_patience": 5}}
    assert levers.lever_changes("label_smoothing", BASE) == {"training": {"label_smoothing": 0.1}}
    assert levers.lever_changes("weight_averaging", BASE) == {"training": {"use_ema": True}}
    assert levers.lever_changes("label_smoothing", {**BASE, "label_smoothing": 0.1}) == {"training": {"label_smoothing": 0.0}}
    assert levers.lever_changes("weight_averaging", {**BASE, "use_ema": True}) == {"training": {"use_ema": False}}
    grid = levers.lever_changes("elastic_grid", BASE)["training"]["augmentation"]
    assert grid == {"max_degrees": 10, **levers.ELASTIC_GRID}  # the base's own elastic settings are replaced
    helpers.augmentation_layers(grid)  # every setting the lever switches on is one helpers knows
    assert levers.lever_changes("base", BASE) == {}
    assert len(set(levers.LEVER_NAMES)) == len(levers.LEVER_NAMES)  # one name selects one lever
    assert set(levers.LEVER_NAMES) >= {"base", "weight_averaging", "all_training_images", "test_time_augmentation",
                                       "original", "tf_data"}


def test_shifted_predictions_average_the_model_over_shifted_images():
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(28, 28, 1))
    model = keras.Model(inputs, layers.Dense(10, activation="softmax")(layers.Flatten()(inputs)))
    images = np.zeros((3, 28, 28, 1), np.float32)
    images[:, 5:20, 6:22] = np.random.default_rng(0).random((3, 15, 16, 1))  # a blank border: rolling = shifting
    expected = np.mean([model.predict(np.roll(images, shift, axis=(1, 2)), verbose=0)
                        for shift in helpers.ONE_PIXEL_SHIFTS], axis=0)
    np.testing.assert_allclose(helpers.shifted_predictions(model, images), expected, atol=1e-6)
    np.testing.assert_allclose(helpers.shifted_predictions(model, images, shifts=((0, 0),)),
                               model.predict(images, verbose=0), atol=1e-6)
    # A shift moves the image's content: the pixel at (5, 6) lands at (6, 6) and the border fills with 0.
    probe = keras.Model(inputs, layers.Flatten()(inputs))
    shifted = helpers.shifted_predictions(probe, images, shifts=((1, 0),)).reshape(3, 28, 28)
    np.testing.assert_allclose(shifted[:, 6, 6], images[:, 5, 6, 0])
    assert not shifted[:, 0].any()
    with pytest.raises(ValueError, match="out of view"):
        helpers.shifted_predictions(model, images, shifts=((28, 0),))
