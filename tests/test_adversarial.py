"""Adversarial digits (adversarial.py): FGSM and PGD on a small network trained on real MNIST and on an ensemble.
Epsilon 0 changes nothing, a larger epsilon costs more accuracy, PGD stays within the epsilon ball and [0, 1], and a
seed makes it repeatable."""

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import adversarial  # noqa: E402
import helpers  # noqa: E402
import saliency  # noqa: E402

TEST_DIGITS = 300


def train_dense(train_images, train_labels, seed):
    """A small dense network (Flatten, Dense 64 ReLU, softmax) trained for one epoch on 6,000 MNIST digits."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(28, 28, 1))
    hidden = keras.layers.Dense(64, activation="relu")(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(hidden))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(train_images, train_labels, batch_size=64, epochs=1, verbose=0)
    return model


@pytest.fixture(scope="module")
def mnist(mnist_dir):
    (train_images, train_labels), (test_images, test_labels) = helpers.load_mnist(mnist_dir)
    return ((helpers.to_model_input(train_images[:6000]), train_labels[:6000]),
            (helpers.to_model_input(test_images[:TEST_DIGITS]), test_labels[:TEST_DIGITS].astype(int)))


@pytest.fixture(scope="module")
def models(mnist):
    (train_images, train_labels), _ = mnist
    return [train_dense(train_images, train_labels, seed) for seed in (0, 1)]


def clean_accuracy(members, images, labels):
    mean = np.mean([member.predict(images, verbose=0) for member in members], axis=0)
    return float(np.mean(mean.argmax(axis=1) == labels))


def test_epsilon_zero_changes_nothing(models, mnist):
    _, (images, labels) = mnist
    model = models[0]
    np.testing.assert_array_equal(adversarial.fgsm(model, images, labels, 0.0), images)
    np.testing.assert_array_equal(adversarial.pgd(model, images, labels, 0.0), images)
    for attack in adversarial.ATTACKS:
        (accuracy,) = adversarial.attack_accuracy(model, images, labels, [0], attack=attack)
        assert accuracy == clean_accuracy([model], images, labels) > 0.8


@pytest.mark.parametrize("attack", adversarial.ATTACKS)
def test_a_larger_epsilon_lowers_accuracy(models, mnist, attack):
    _, (images, labels) = mnist
    accuracies = adversarial.attack_accuracy(models[0], images, labels, [0, 0.1, 0.3], attack=attack)
    assert accuracies[0] > accuracies[1] > accuracies[2]
    assert accuracies[1] < accuracies[0] - 0.2 and accuracies[2] < 0.1, accuracies  # a dense net is easily fooled


def test_pgd_is_at_least_as_strong_as_fgsm(models, mnist):
    _, (images, labels) = mnist
    fgsm, pgd = (adversarial.attack_accuracy(models[0], images, labels, [0.05], attack=attack)[0]
                 for attack in adversarial.ATTACKS)
    assert pgd <= fgsm + 0.01, (fgsm, pgd)


@pytest.mark.parametrize("epsilon", [0.02, 0.1, 0.3])
def test_pgd_keeps_every_image_within_epsilon_and_within_0_1(models, mnist, epsilon):
    _, (images, labels) = mnist
    # Steps as large as epsilon would leave the ball and [0, 1] at once without the projection.
    attacked = adversarial.pgd(models[0], images, labels, epsilon, steps=5, step_size=epsilon)
    assert attacked.shape == images.shape and attacked.dtype == np.float32
    change = np.abs(attacked - images)
    assert change.max() <= epsilon + 1e-6 and attacked.min() >= 0.0 and attacked.max() <= 1.0
    assert change.max() >= epsilon - 1e-6  # the whole ball is used
    assert np.any((images == 0.0) & (attacked == 0.0)) and np.any((images == 1.0) & (attacked == 1.0))
    fgsm = adversarial.fgsm(models[0], images, labels, epsilon)
    assert np.abs(fgsm - images).max() <= epsilon + 1e-6 and fgsm.min() >= 0.0 and fgsm.max() <= 1.0


def test_pgd_is_repeatable_with_a_seed(models, mnist):
    _, (images, labels) = mnist
    first = adversarial.pgd(models[0], images, labels, 0.1, seed=3)
    np.testing.assert_array_equal(first, adversarial.pgd(models[0], images, labels, 0.1, seed=3))
    np.testing.assert_array_equal(first, adversarial.pgd(models[0], images, labels, 0.1, seed=3, batch_size=128))
    assert not np.array_equal(first, adversarial.pgd(models[0], images, labels, 0.1, seed=4))
    without_start = adversarial.pgd(models[0], images, labels, 0.1, random_start=False)
    np.testing.assert_array_equal(without_start, adversarial.pgd(models[0], images, labels, 0.1, seed=4,
                                                                 random_start=False))


def test_an_ensemble_is_attacked_through_its_mean_probabilities(models, mnist):
    _, (images, labels) = mnist
    accuracies = adversarial.attack_accuracy(models, images, labels, [0, 0.1], attack="pgd")
    assert accuracies[0] == clean_accuracy(models, images, labels) == adversarial.accuracy(models, images, labels)
    assert accuracies[1] < accuracies[0] - 0.2
    # Two copies of one model are that model; the gradient of an ensemble mixes its members'.
    np.testing.assert_array_equal(adversarial.fgsm([models[0], models[0]], images, labels, 0.1),
                                  adversarial.fgsm(models[0], images, labels, 0.1))
    values, gradients = saliency.log_probability_gradients(models, images[:20], labels[:20])
    step = 1e-2 * np.sign(gradients)
    after = saliency.log_probabilities(models, images[:20] + step)[np.arange(20), labels[:20]]
    np.testing.assert_allclose(values, np.log(np.mean([member.predict(images[:20], verbose=0) for member in models],
                                                      axis=0))[np.arange(20), labels[:20]], atol=1e-4)
    assert np.all(after > values)  # a small step along the gradient raises the ensemble's log-probability


@pytest.mark.parametrize("call, message", [
    (lambda model, images, labels: adversarial.fgsm(model, images, labels, -0.1), "epsilon=-0.1"),
    (lambda model, images, labels: adversarial.fgsm(model, images, labels, 2), "epsilon=2"),
    (lambda model, images, labels: adversarial.pgd(model, images, labels, 0.1, steps=0), "steps=0"),
    (lambda model, images, labels: adversarial.pgd(model, images, labels, 0.1, step_size=-1), "step_size=-1"),
    (lambda model, images, labels: adversarial.fgsm(model, images, labels[:5], 0.1), "labels of shape"),
    (lambda model, images, labels: adversarial.fgsm(model, images * 255, labels, 0.1), "the models expect"),
    (lambda model, images, labels: adversarial.attack_accuracy(model, images, labels, [0.1], "cw"), "attack 'cw'"),
    (lambda model, images, labels: adversarial.attack_accuracy(model, images, labels, []), "no epsilons"),
])
def test_bad_arguments_are_refused_by_name(models, mnist, call, message):
    _, (images, labels) = mnist
    with pytest.raises(ValueError, match=message):
        call(models[0], images[:10], labels[:10])
