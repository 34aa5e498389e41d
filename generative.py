"""Conditional generators of digits, and the distance the notebook judges them by.

Two ways to draw a digit on request, each a Keras model trained with `fit` (so the notebook's
one line per epoch and its history come for free): a conditional variational autoencoder
(Kingma and Welling 2014; Sohn et al. 2015) and a conditional GAN (Mirza and Osindero 2014, with
DCGAN's convolutions, Radford et al. 2016). Their networks are built in model.ipynb; this module
holds the training steps, the sampling and the Frechet distance (Heusel et al. 2017) measured in a
classifier's penultimate features. Both generators have the same interface, saved alone as
generator.keras: (code of N(0, I) values, one-hot digit) -> 28x28x1 image in [0, 1].
"""
import keras
import numpy as np
import tensorflow as tf

import helpers

NUM_CLASSES = 10


class ConditionalVAE(keras.Model):
    """Encoder (image, one-hot digit) -> mean and log-variance of a code; decoder (code, one-hot digit) -> image.

    The loss per image is the binary cross-entropy of its pixels, summed, plus the KL divergence
    of its code from N(0, I); after training, codes drawn from N(0, I) decode to new digits.
    """

    def __init__(self, encoder, decoder, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.encoder, self.generator = encoder, decoder
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.trackers = [keras.metrics.Mean(name=name) for name in ("loss", "reconstruction", "kl")]

    @property
    def metrics(self):
        return self.trackers

    def train_step(self, data):
        images, labels = data
        one_hot = tf.one_hot(labels, NUM_CLASSES)
        with tf.GradientTape() as tape:
            code_mean, code_log_variance = self.encoder([images, one_hot], training=True)
            noise = keras.random.normal(tf.shape(code_mean), seed=self.seed_generator)
            code = code_mean + tf.exp(0.5 * code_log_variance) * noise
            drawn = self.generator([code, one_hot], training=True)
            reconstruction = tf.reduce_mean(tf.reduce_sum(keras.losses.binary_crossentropy(images, drawn), axis=(1, 2)))
            kl = tf.reduce_mean(-0.5 * tf.reduce_sum(1 + code_log_variance - tf.square(code_mean) - tf.exp(code_log_variance), axis=1))
            loss = reconstruction + kl
        weights = self.encoder.trainable_weights + self.generator.trainable_weights
        self.optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights))
        for tracker, value in zip(self.trackers, (loss, reconstruction, kl)):
            tracker.update_state(value)
        return {tracker.name: tracker.result() for tracker in self.trackers}


class ConditionalGAN(keras.Model):
    """Generator (noise, one-hot digit) -> image, against a discriminator (image, one-hot digit) -> logit of "real".

    Each step trains the discriminator on a batch of real and generated digits of the same labels
    (real ones aimed at 0.9, one-sided label smoothing), then the generator to fool it.
    """

    def __init__(self, generator, discriminator, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.generator, self.discriminator = generator, discriminator
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.trackers = [keras.metrics.Mean(name=name) for name in ("generator_loss", "discriminator_loss")]
        self.logit_loss = keras.losses.BinaryCrossentropy(from_logits=True)

    @property
    def metrics(self):
        return self.trackers

    def compile(self, generator_optimizer, discriminator_optimizer):
        # Each optimizer is built for its own network only; Keras sees the generator's as the model's.
        generator_optimizer.build(self.generator.trainable_variables)
        discriminator_optimizer.build(self.discriminator.trainable_variables)
        super().compile(optimizer=generator_optimizer)
        self.discriminator_optimizer = discriminator_optimizer

    def train_step(self, data):
        images, labels = data
        one_hot = tf.one_hot(labels, NUM_CLASSES)
        noise_shape = (tf.shape(images)[0], self.generator.inputs[0].shape[-1])
        with tf.GradientTape() as tape:
            drawn = self.generator([keras.random.normal(noise_shape, seed=self.seed_generator), one_hot], training=True)
            real_logits = self.discriminator([images, one_hot], training=True)
            drawn_logits = self.discriminator([drawn, one_hot], training=True)
            discriminator_loss = (self.logit_loss(tf.fill(tf.shape(real_logits), 0.9), real_logits)
                                  + self.logit_loss(tf.zeros_like(drawn_logits), drawn_logits))
        weights = self.discriminator.trainable_weights
        self.discriminator_optimizer.apply_gradients(zip(tape.gradient(discriminator_loss, weights), weights))
        with tf.GradientTape() as tape:
            drawn = self.generator([keras.random.normal(noise_shape, seed=self.seed_generator), one_hot], training=True)
            drawn_logits = self.discriminator([drawn, one_hot], training=True)
            generator_loss = self.logit_loss(tf.ones_like(drawn_logits), drawn_logits)
        weights = self.generator.trainable_weights
        self.optimizer.apply_gradients(zip(tape.gradient(generator_loss, weights), weights))
        for tracker, value in zip(self.trackers, (generator_loss, discriminator_loss)):
            tracker.update_state(value)
        return {tracker.name: tracker.result() for tracker in self.trackers}


def compile_trainer(trainer, settings: dict) -> None:
    """Adam with the settings' learning_rate (and beta_1, 0.5 for a GAN as in DCGAN): one per network for a GAN."""
    def adam():
        return keras.optimizers.Adam(settings["learning_rate"], beta_1=settings.get("beta_1", 0.9))

    if isinstance(trainer, ConditionalGAN):
        trainer.compile(adam(), adam())
    else:
        trainer.compile(optimizer=adam())


def train(trainer, images, labels, settings: dict, seed: int, name: str, epochs: int, initial_epoch: int = 0):
    """Train a compiled trainer from epoch `initial_epoch` to `epochs` on shuffled batches; (history, wall s, CPU s)."""
    batches = helpers.make_dataset(images, labels, settings["batch_size"], shuffle=True, seed=seed)
    return helpers.fit_timed(trainer, batches, None, epochs, name, initial_epoch=initial_epoch)


def codes(count: int, code_size: int, seed: int) -> np.ndarray:
    """`count` codes drawn from N(0, I) with `seed`."""
    return np.random.default_rng(seed).standard_normal((count, code_size)).astype("float32")


def generate(generator, digits, seed: int, batch_size: int = 1024) -> np.ndarray:
    """One generated image (N, 28, 28, 1), values in [0, 1], for each requested digit, from codes drawn with `seed`."""
    digits = np.asarray(digits)
    if digits.size and (digits.min() < 0 or digits.max() >= NUM_CLASSES):
        raise ValueError(f"digits to generate must be 0-9, got {sorted(set(digits.tolist()) - set(range(NUM_CLASSES)))}")
    inputs = [codes(len(digits), generator.inputs[0].shape[-1], seed), keras.utils.to_categorical(digits, NUM_CLASSES)]
    return generator.predict(inputs, batch_size=batch_size, verbose=0)


def interpolation(generator, first: int, second: int, steps: int, seed: int) -> np.ndarray:
    """Images from digit `first` to digit `second`: one code, its one-hot condition moved in `steps` straight steps."""
    weights = np.linspace(0.0, 1.0, steps, dtype="float32")[:, None]
    conditions = (1 - weights) * keras.utils.to_categorical(first, NUM_CLASSES) + weights * keras.utils.to_categorical(second, NUM_CLASSES)
    code = np.repeat(codes(1, generator.inputs[0].shape[-1], seed), steps, axis=0)
    return generator.predict([code, conditions.astype("float32")], verbose=0)


def frechet_distance(features, other_features) -> float:
    """Frechet distance between Gaussians fitted to two sets of features (rows): 0 for a set and itself.

    |mean_a - mean_b|^2 + trace(C_a + C_b - 2 (C_a C_b)^(1/2)); the trace of the square root is taken
    as the sum of the square roots of the eigenvalues of C_a^(1/2) C_b C_a^(1/2), which is symmetric.
    """
    features, other_features = np.asarray(features, dtype="float64"), np.asarray(other_features, dtype="float64")
    if features.ndim != 2 or other_features.ndim != 2 or features.shape[1] != other_features.shape[1]:
        raise ValueError(f"the Frechet distance needs two sets of features of one width, got shapes {features.shape} and {other_features.shape}")
    covariance, other_covariance = np.cov(features, rowvar=False), np.cov(other_features, rowvar=False)
    values, vectors = np.linalg.eigh(covariance)
    root = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    cross_trace = np.sqrt(np.clip(np.linalg.eigvalsh(root @ other_covariance @ root), 0, None)).sum()
    mean_difference = features.mean(axis=0) - other_features.mean(axis=0)
    return float(max(mean_difference @ mean_difference + np.trace(covariance) + np.trace(other_covariance) - 2 * cross_trace, 0.0))


def balanced_subset(labels, size: int, seed: int) -> np.ndarray:
    """Indices of `size` examples, size // 10 of each digit, drawn with `seed` (the low-label experiment's labelled digits)."""
    rng = np.random.default_rng(seed)
    return np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == digit), size // NUM_CLASSES, replace=False)
                                   for digit in range(NUM_CLASSES)]))


def tile(images, labels, count: int, seed: int):
    """`count` examples made of the given ones repeated (and shuffled with `seed`), so small sets train as many steps."""
    index = np.random.default_rng(seed).permutation(np.resize(np.arange(len(labels)), count))
    return images[index], labels[index]

