"""What a short adversarial fine-tune buys the residual network: PGD accuracy gained, clean accuracy and CPU paid.

Loads the notebook's `resnet` (safe mode) and fine-tunes a copy for one pass over part of its training
digits, each batch half clean digits and half their PGD versions against the model as it is at that step
(Madry et al. 2018, with few steps to keep it short), then measures the copy and the model as trained on
the notebook's attack set: the same 1,000 test digits drawn with the seed, FGSM and PGD (10 steps) at
each epsilon, and the clean accuracy on all 10,000 test digits and on the validation writers. Writes
`adversarial_training.json` and prints one line per model.
Run from the project root: .venv/bin/python -m benchmarks.adversarial_training
"""

import argparse
import json
import time
from pathlib import Path

import keras
import numpy as np

import adversarial
import helpers
from benchmarks import recipes

EPSILONS = [0, 0.02, 0.05, 0.1, 0.2, 0.3]  # the notebook's ADVERSARIAL["epsilons"]
ATTACK_DIGITS, SEED = 1000, 42


def measure(model, splits, attack_inputs, attack_labels):
    """Clean test and validation accuracy, and FGSM and PGD accuracy on the attack set at each epsilon."""
    return {"test_accuracy": helpers.accuracy(model.predict(splits.test_inputs, batch_size=1024, verbose=0), splits.test_labels),
            "validation_accuracy": helpers.accuracy(model.predict(splits.validation_inputs, batch_size=1024, verbose=0),
                                                    splits.validation_labels),
            "fgsm": adversarial.attack_accuracy(model, attack_inputs, attack_labels, EPSILONS, attack="fgsm"),
            "pgd": adversarial.attack_accuracy(model, attack_inputs, attack_labels, EPSILONS, attack="pgd", steps=10, seed=SEED)}


def adversarial_fine_tune(base, inputs, labels, epsilon, steps, batch_size, learning_rate):
    """A copy of `base` trained one pass over `inputs`, each batch half clean and half attacked; returns it and its CPU seconds."""
    model = keras.models.clone_model(base)
    model.set_weights(base.get_weights())
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy")
    order = np.random.default_rng(SEED).permutation(len(inputs))
    started = time.process_time()
    for number, start in enumerate(range(0, len(order), batch_size)):
        batch = order[start:start + batch_size]
        half = len(batch) // 2
        attacked = adversarial.pgd(model, inputs[batch[:half]], labels[batch[:half]], epsilon, steps=steps, seed=number)
        model.train_on_batch(np.concatenate([attacked, inputs[batch[half:]]]), labels[batch])
    return model, time.process_time() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=12000, help="training digits in the one pass")
    parser.add_argument("--epsilon", type=float, default=0.1, help="the training attack's budget (0-1 pixel scale)")
    parser.add_argument("--steps", type=int, default=3, help="PGD steps of the training attack")
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--output", type=Path, default=Path(__file__).with_name("adversarial_training.json"))
    arguments = parser.parse_args()
    _, run = recipes.notebook_training("resnet")
    splits = recipes.load_splits(None, run["validation_split"], False, run.get("seed", 42),
                                 run.get("validation_split_by", "last fraction"))
    attack_index = np.sort(np.random.default_rng(SEED).choice(len(splits.test_inputs), ATTACK_DIGITS, replace=False))
    attack_inputs, attack_labels = splits.test_inputs[attack_index], splits.test_labels[attack_index]
    base = helpers.load_saved_model(recipes.MODELS_DIR / "resnet.keras")
    keras.utils.set_random_seed(SEED)
    tuned, cpu_seconds = adversarial_fine_tune(base, splits.fit_inputs[:arguments.images], splits.fit_labels[:arguments.images],
                                               arguments.epsilon, arguments.steps, 128, arguments.learning_rate)
    results = {"cpu": helpers.cpu_description(), "epsilons": EPSILONS, "attack_digits": ATTACK_DIGITS,
               "fine_tune": {"images": arguments.images, "epsilon": arguments.epsilon, "steps": arguments.steps,
                             "learning_rate": arguments.learning_rate, "batch_size": 128, "attacked_share": 0.5,
                             "cpu_seconds": round(cpu_seconds, 1)},
               "as trained": measure(base, splits, attack_inputs, attack_labels),
               "adversarially fine-tuned": measure(tuned, splits, attack_inputs, attack_labels)}
    for name in ("as trained", "adversarially fine-tuned"):
        entry = results[name]
        print(f"{name:>25}: test {entry['test_accuracy']:.2%}, validation {entry['validation_accuracy']:.2%}; "
              f"PGD " + " ".join(f"{value:.1%}" for value in entry["pgd"]) + f" at epsilon {EPSILONS}")
    print(f"fine-tune: {cpu_seconds:.0f} CPU-s ({results['cpu']})")
    arguments.output.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
