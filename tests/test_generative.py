"""The generators' building blocks (generative.py) on images the tests draw: bars standing for two digits."""
import numpy as np
import pytest

keras = pytest.importorskip("keras")
from keras import layers  # noqa: E402

import generative  # noqa: E402
import helpers  # noqa: E402
import reader  # noqa: E402

CODE_SIZE = 2


def small_generator(name="generator"):
    code, digit = keras.Input((CODE_SIZE,)), keras.Input((10,))
    x = layers.Dense(7 * 7 * 8, activation="relu")(layers.Concatenate()([code, digit]))
    x = layers.Reshape((7, 7, 8))(x)
    x = layers.Conv2DTranspose(8, 3, strides=4, padding="same", activation="relu")(x)
    return keras.Model([code, digit], layers.Conv2D(1, 3, padding="same", activation="sigmoid")(x), name=name)


def small_encoder():
    image, digit = keras.Input((28, 28, 1)), keras.Input((10,))
    x = layers.Dense(32, activation="relu")(layers.Concatenate()([layers.Flatten()(layers.AveragePooling2D(4)(image)), digit]))
    return keras.Model([image, digit], [layers.Dense(CODE_SIZE)(x), layers.Dense(CODE_SIZE)(x)])


def small_discriminator():
    image, digit = keras.Input((28, 28, 1)), keras.Input((10,))
    x = layers.Concatenate()([layers.Flatten()(layers.AveragePooling2D(4)(image)), digit])
    return keras.Model([image, digit], layers.Dense(1)(layers.Dense(16, activation="relu")(x)))


def bars(count, seed=0):
    """Digit 0 drawn as a vertical bar, digit 1 as a horizontal one, at random places; labels alternate 0, 1."""
    rng = np.random.default_rng(seed)
    images = np.zeros((count, 28, 28, 1), dtype="float32")
    labels = np.arange(count) % 2
    for image, label, place in zip(images, labels, rng.integers(6, 22, count)):
        if label == 0:
            image[4:24, place - 2:place + 2] = 1.0
        else:
            image[place - 2:place + 2, 4:24] = 1.0
    return images, labels


def orientation(images):
    """Positive for a vertical bar (its ink piles up in a few columns), negative for a horizontal one (in a few rows)."""
    ink = images[..., 0]
    return ink.sum(axis=1).max(axis=1) - ink.sum(axis=2).max(axis=1)


def test_generated_images_have_the_right_shape_and_range():
    images = generative.generate(small_generator(), [0, 3, 9, 9], seed=1)
    assert images.shape == (4, 28, 28, 1) and images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 1.0


def test_generate_refuses_a_digit_outside_0_to_9():
    with pytest.raises(ValueError, match=r"must be 0-9, got \[10\]"):
        generative.generate(small_generator(), [1, 10], seed=1)


def test_same_seed_same_digits_and_codes_come_from_the_seed():
    generator = small_generator()
    first, second = generative.generate(generator, [2, 5], seed=3), generative.generate(generator, [2, 5], seed=3)
    np.testing.assert_array_equal(first, second)
    assert not np.allclose(generative.codes(4, CODE_SIZE, 3), generative.codes(4, CODE_SIZE, 4))


def test_a_conditional_vae_trained_a_few_steps_draws_the_digit_asked_for():
    images, labels = bars(1024)
    keras.utils.set_random_seed(0)
    trainer = generative.ConditionalVAE(small_encoder(), small_generator(), seed=0)
    settings = {"batch_size": 64, "learning_rate": 3e-3}
    generative.compile_trainer(trainer, settings)
    history, _, cpu_seconds = generative.train(trainer, images, labels, settings, seed=0, name="cvae", epochs=12)
    assert history["loss"][-1] < history["loss"][0] and set(history) == {"loss", "reconstruction", "kl"}
    asked = np.arange(200) % 2
    drawn = generative.generate(trainer.generator, asked, seed=1)
    vertical = orientation(drawn) > 0
    # Asked for 0, it draws vertical bars far more often than horizontal ones; asked for 1, the other way round.
    assert vertical[asked == 0].mean() > 0.8 and vertical[asked == 1].mean() < 0.2


def test_a_conditional_gan_step_trains_both_networks():
    images, labels = bars(256)
    keras.utils.set_random_seed(0)
    trainer = generative.ConditionalGAN(small_generator(), small_discriminator(), seed=0)
    settings = {"batch_size": 64, "learning_rate": 1e-3, "beta_1": 0.5}
    generative.compile_trainer(trainer, settings)
    generator_before = [weight.copy() for weight in trainer.generator.get_weights()]
    discriminator_before = [weight.copy() for weight in trainer.discriminator.get_weights()]
    history, _, _ = generative.train(trainer, images, labels, settings, seed=0, name="cgan", epochs=2, initial_epoch=1)
    assert set(history) == {"generator_loss", "discriminator_loss"} and len(history["generator_loss"]) == 1
    assert all(np.isfinite(value) for values in history.values() for value in values)
    assert any(not np.allclose(before, after) for before, after in zip(generator_before, trainer.generator.get_weights()))
    assert any(not np.allclose(before, after) for before, after in zip(discriminator_before, trainer.discriminator.get_weights()))


def test_the_epoch_lines_show_the_generators_losses(capsys):
    images, labels = bars(128)
    trainer = generative.ConditionalVAE(small_encoder(), small_generator(), seed=0)
    generative.compile_trainer(trainer, {"learning_rate": 1e-3})
    generative.train(trainer, images, labels, {"batch_size": 64}, seed=0, name="cvae", epochs=1)
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.split()[:3] == ["cvae", "epoch", "1/1"] and "reconstruction" in line and " kl " in line


def test_frechet_distance_is_zero_for_a_set_with_itself_and_grows_with_a_shift():
    features = np.random.default_rng(0).normal(size=(2000, 8))
    assert generative.frechet_distance(features, features) == pytest.approx(0.0, abs=1e-8)
    # Shifting every feature by 1 moves the mean by sqrt(8): the distance is 8, the covariances being equal.
    assert generative.frechet_distance(features, features + 1.0) == pytest.approx(8.0, abs=1e-6)
    wider = generative.frechet_distance(features, features * 2.0)
    assert wider > 1.0  # same mean, covariance four times larger: trace(C + 4C - 2 * 2C) = trace(C), about 8
    with pytest.raises(ValueError, match="one width"):
        generative.frechet_distance(features, features[:, :4])


def test_the_saved_generator_reloads_in_safe_mode_and_draws_the_same(tmp_path):
    generator = small_generator()
    sample = [generative.codes(8, CODE_SIZE, 0), keras.utils.to_categorical(np.arange(8), 10)]
    helpers.save_model_checked(generator, tmp_path / "generator.keras", sample)
    reloaded = reader.load_model(tmp_path / "generator.keras")
    np.testing.assert_allclose(generative.generate(reloaded, [4, 7], seed=2), generative.generate(generator, [4, 7], seed=2), atol=1e-6)


def test_balanced_subset_and_tile():
    labels = np.repeat(np.arange(10), 50)
    chosen = generative.balanced_subset(labels, 100, seed=1)
    assert len(set(chosen.tolist())) == 100 and np.bincount(labels[chosen], minlength=10).tolist() == [10] * 10
    images = np.arange(100, dtype="float32").reshape(100, 1)
    tiled_images, tiled_labels = generative.tile(images, labels[:100], 250, seed=1)
    assert len(tiled_labels) == 250 and np.all(tiled_labels == labels[tiled_images[:, 0].astype(int)])
    assert np.bincount(tiled_images[:, 0].astype(int), minlength=100).min() >= 2
