"""count_multiply_adds and training_gflops against numbers counted by hand."""

import keras
from keras import layers

from benchmarks import recipes


def test_convolution_and_dense_by_hand():
    inputs = keras.Input(shape=(28, 28, 1))
    x = layers.Conv2D(8, 3)(inputs)                                 # 26*26*8*9*1 = 48,672
    x = layers.MaxPooling2D(2)(x)                                   # 13x13x8, not counted
    x = layers.Conv2D(4, 3, strides=2, padding="same")(x)           # 7*7*4*9*8 = 14,112
    x = layers.BatchNormalization()(x)                              # not counted
    x = layers.Flatten()(x)                                         # 196 values
    outputs = layers.Dense(10)(x)                                   # 196*10 = 1,960
    model = keras.Model(inputs, outputs)
    assert recipes.count_multiply_adds(model) == 48672 + 14112 + 1960


def test_depthwise_grouped_and_nested_models():
    inner_inputs = keras.Input(shape=(4,))
    inner = keras.Model(inner_inputs, layers.Dense(10)(inner_inputs))   # 40
    inputs = keras.Input(shape=(8, 8, 4))
    x = layers.DepthwiseConv2D(3, padding="same")(inputs)              # 8*8*4*9 = 2,304
    x = layers.Conv2D(4, 1, groups=2)(x)                               # 8*8*4*1*4/2 = 512
    x = layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, inner(x))
    assert recipes.count_multiply_adds(model) == 2304 + 512 + 40


def test_the_original_cnn():
    inputs = keras.Input(shape=(28, 28, 1))
    x = layers.MaxPooling2D(2)(layers.Conv2D(32, 3, activation="relu")(inputs))
    x = layers.MaxPooling2D(2)(layers.Conv2D(64, 3, activation="relu")(x))
    x = layers.Dense(128, activation="relu")(layers.Flatten()(x))
    model = keras.Model(inputs, layers.Dense(10)(x))
    expected = 26 * 26 * 32 * 9 + 11 * 11 * 64 * 9 * 32 + 1600 * 128 + 128 * 10
    assert recipes.count_multiply_adds(model) == expected


def test_dense_after_flatten_in_a_sequential_model():
    model = keras.Sequential([keras.Input(shape=(2, 2, 1)), layers.Flatten(), layers.Dense(10)])
    assert recipes.count_multiply_adds(model) == 4 * 10


def test_the_notebook_dense_network():
    inputs = keras.Input(shape=(28, 28, 1))
    x = layers.Dropout(0.2)(layers.Dense(128, activation="relu")(layers.Flatten()(inputs)))
    model = keras.Model(inputs, layers.Dense(10, activation="softmax")(x))
    assert recipes.count_multiply_adds(model) == 784 * 128 + 128 * 10


def test_training_gflops_counts_forward_and_backward_passes():
    # 1,000,000 multiply-adds per image at 1,000 images/s: 2 FLOPs x 3 passes x 1e9 = 6 GFLOP/s.
    assert recipes.training_gflops(1_000_000, 1000.0) == 6.0
