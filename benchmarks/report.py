"""Write the measured tables into benchmarks/README.md and the README's performance section.

Reads benchmarks/results.json (time_to_accuracy), benchmarks/levers.json (levers) and
figures/metrics.json (the notebook's full run), so every number in the two READMEs comes from
a file that a run wrote, never from memory. A table whose results do not exist yet says so.

    python -m benchmarks.report
"""

from pathlib import Path

import helpers
from benchmarks import levers as lever_definitions
from benchmarks import recipes

RECIPES = ("original", "best")
NOT_MEASURED = "not measured yet"
# Earlier studies of the training levers in levers.json, kept as they were measured: section -> title.
EARLIER_STUDIES = {"training_before_label_smoothing": "Training levers at full length, before label smoothing",
                   "training_8_epochs": "Training levers, first study (8 epochs)"}


def read_optional_json(path, what):
    """A JSON file's content (read by the project's one JSON reader), or None when there is no file."""
    return helpers.read_json(path, what) if Path(path).is_file() else None


def percent(value):
    return f"{value * 100:.2f}%"


def accuracy_text(spread):
    """'99.62% (99.60-99.64)', or one number for a single seed."""
    if spread["min"] == spread["max"]:
        return percent(spread["mean"])
    return f"{percent(spread['mean'])} ({spread['min'] * 100:.2f}-{spread['max'] * 100:.2f})"


def seconds_text(spread):
    """'231 (220-242)' seconds, one number when the seeds agree to the second, '-' when not measured."""
    if spread is None:
        return "-"
    low, high = f"{spread['min']:.0f}", f"{spread['max']:.0f}"
    return f"{spread['mean']:.0f}" if low == high else f"{spread['mean']:.0f} ({low}-{high})"


def plural(count, noun):
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def recipe_label(results, key):
    """'original (cnn_basic, 10 epochs)'."""
    recipe = results["recipes"][key]
    return f"{key} ({recipe['model']}, {recipe['settings']['epochs']} epochs)"


def seeds_text(seeds):
    return f"seed {seeds[0]}" if len(seeds) == 1 else "seeds " + ", ".join(map(str, seeds))


def reached_text(summary, label):
    """When a recipe reached a threshold, over its seeds: '82.7 s (80-85), epoch 4', 'not reached' or '1 of 2 seeds'."""
    entry = summary["seconds_to"][label]
    if entry["seconds"] is None:
        return "not reached" if entry["seeds_reached"] == 0 else f"{entry['seeds_reached']} of {summary['seeds']} seeds"
    seconds, epoch = entry["seconds"], entry["epoch"]
    epochs = f"{epoch['min']:.0f}" if epoch["min"] == epoch["max"] else f"{epoch['min']:.0f}-{epoch['max']:.0f}"
    if seconds["min"] == seconds["max"]:
        return f"{seconds['mean']:.1f} s, epoch {epochs}"
    return f"{seconds['mean']:.1f} s ({seconds['min']:.0f}-{seconds['max']:.0f}), epoch {epochs}"


# ==================== Time to accuracy ===============================================


def time_to_accuracy_markdown(results):
    """The original recipe against the notebook's best: seconds to each accuracy, throughput, cost."""
    if results is None:
        return f"Time to accuracy: {NOT_MEASURED}; run `make benchmark`."
    thresholds = list(recipes.THRESHOLDS)
    lines = [
        f"Measured {results['date'][:10]} on {results['cpu']} (TensorFlow {results['tensorflow']}, Keras "
        f"{results['keras']}), {seeds_text(results['seeds'])}, both recipes in one process. Seconds to an "
        "accuracy: mean over the seeds (lowest-highest), and the epoch; a mean only when every seed reached it.",
        "",
        "| recipe | " + " | ".join(f"to {label}%" for label in thresholds) + " | final test accuracy | training s "
        "| CPU s | train images/s | inference images/s | multiply-adds per image | training GFLOP/s |",
        "| --- |" + " --- |" * len(thresholds) + " --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key in RECIPES:
        if key not in results["recipes"]:
            lines.append(f"| {key} | {NOT_MEASURED} |" + " |" * (len(thresholds) + 6))
            continue
        summary = results["recipes"][key]["summary"]
        lines.append(
            f"| {recipe_label(results, key)} | "
            + " | ".join(reached_text(summary, label) for label in thresholds)
            + f" | {accuracy_text(summary['final_test_accuracy'])} | {seconds_text(summary['training_seconds'])} | "
            f"{seconds_text(summary['training_cpu_seconds'])} | {summary['train_images_per_second']:,} | "
            f"{summary['inference_images_per_second']:,} | {summary['multiply_adds_per_image']:,} | "
            f"{summary['training_gflops_per_second']:.1f} |")
    ratio = results.get("ratio_seconds_to_99.0")
    cpu_ratio = results.get("ratio_cpu_seconds_to_99.0")
    lines += ["", (f"**Seconds to 99.0% test accuracy, best / original: {ratio:.3f}**"
                   + (f" (CPU seconds: {cpu_ratio:.3f})." if cpu_ratio is not None else ".")
                   if ratio is not None else
                   "**No ratio: not every seed of both recipes reached 99.0%, or one recipe is not measured yet.**")]
    ceiling = results.get("matmul_gflops_per_second")
    if ceiling:
        shares = [f"{results['recipes'][key]['summary']['training_gflops_per_second'] / ceiling * 100:.0f}% of that "
                  f"in the {key} recipe" for key in RECIPES if key in results["recipes"]]
        lines += ["", f"A large float32 matrix product reaches {ceiling} GFLOP/s on this CPU; training reaches "
                      f"{' and '.join(shares)}. Small convolutions, batch normalization, pooling and the "
                      "optimizer's updates are memory-bound, which is where the rest goes."]
    lines += ["", "Test accuracy after each epoch (cumulative training seconds in brackets):", ""]
    for key in RECIPES:
        for seed, record in results["recipes"].get(key, {}).get("seeds", {}).items():
            cumulative, total = [], 0.0
            for seconds in record["epoch_seconds"]:
                total += seconds
                cumulative.append(total)
            steps = ", ".join(f"{percent(accuracy)} ({seconds:.0f} s)"
                              for accuracy, seconds in zip(record["test_accuracy"], cumulative))
            lines.append(f"- {key}, seed {seed}: {steps}")
    if results.get("note"):
        lines += ["", f"_{results['note']}_"]
    return "\n".join(lines)


def lengths_markdown(results):
    """Complete runs of the best recipe of several lengths, against the original recipe's training seconds."""
    lengths = results["lengths"]
    fast = lengths["fast_recipe_epochs"]
    lines = [
        f"Complete runs of the best recipe ({results['recipes']['best']['model']}), each a whole run of its "
        "length with its schedule fitted to it, measured in the same process as the original recipe "
        f"({results['cpu']}, {seeds_text(results['seeds'])}). The fast recipe is the fewest epochs whose final "
        f"test accuracy, mean over the seeds, is at least {lengths['target']:.1%}: "
        + (f"**{fast} epochs**." if fast else "**none of these lengths reached it**."),
        "",
        "| epochs | final test accuracy | final validation accuracy | training s | CPU s | "
        "x the original's seconds | x the original's CPU s |",
        "| ---: | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for entry in lengths["runs"].values():
        validation = entry.get("final_validation_accuracy")
        lines.append(f"| {entry['epochs']} | {accuracy_text(entry['final_test_accuracy'])} | "
                     f"{accuracy_text(validation) if validation else ''} | "
                     f"{seconds_text(entry['training_seconds'])} | {seconds_text(entry['training_cpu_seconds'])} | "
                     f"{entry['ratio_to_original_seconds']:.2f} | {entry['ratio_to_original_cpu_seconds']:.2f} |")
    return "\n".join(lines)


def fast_recipe_text(results):
    """One sentence on the fast recipe: its epochs, final accuracy and training seconds against the original's."""
    lengths = results["lengths"]
    measured = ", ".join(str(entry["epochs"]) for entry in lengths["runs"].values())
    fast = lengths["runs"].get(str(lengths["fast_recipe_epochs"]))
    if fast is None:
        return (f"Fast recipe: no complete run of the best recipe ({measured} epochs) ended at "
                f"{lengths['target']:.1%} or more, mean over the seeds.")
    return (f"Fast recipe: **{fast['epochs']} epochs** of the best recipe, the fewest of the complete runs measured "
            f"({measured} epochs) whose final test accuracy, mean over the seeds, is at least {lengths['target']:.1%}: "
            f"{accuracy_text(fast['final_test_accuracy'])}, in x{fast['ratio_to_original_seconds']:.2f} the original "
            f"recipe's training seconds (x{fast['ratio_to_original_cpu_seconds']:.2f} its CPU seconds).")


# ==================== Training levers ================================================


def verdict(name, entry, base):
    """One line on what a lever gave: its accuracy change against the seeds' spread, and its cost per epoch."""
    if name == "base":
        return "the reference"
    # A choice rests on the validation writers; runs measured before validation was recorded fall back to test.
    on_validation = all(summary.get("final_validation_accuracy") for summary in (entry["summary"], base["summary"]))
    key = "final_validation_accuracy" if on_validation else "final_test_accuracy"
    change = (entry["summary"][key]["mean"] - base["summary"][key]["mean"]) * 100
    spreads = [(summary[key]["max"] - summary[key]["min"]) * 100 for summary in (entry["summary"], base["summary"])]
    if min(entry["summary"]["seeds"], base["summary"]["seeds"]) < 2:
        accuracy = f"{change:+.2f} points on one seed, too few to tell"
    elif abs(change) > max(spreads):
        accuracy = (f"{'helped' if change > 0 else 'hurt'}{' on validation' if on_validation else ''}: {change:+.2f} "
                    f"points, beyond the seeds' spread of {max(spreads):.2f}")
    else:
        accuracy = (f"no clear change{' on validation' if on_validation else ''}: {change:+.2f} points, within the "
                    f"seeds' spread of {max(spreads):.2f}")
    if name == "test_time_augmentation":
        predictions = len(entry["changes"]["evaluation"]["shifts"])
        return f"{accuracy}; no training of its own, {predictions} predictions per image"
    ratio = entry["summary"]["cpu_seconds_per_epoch"] / base["summary"]["cpu_seconds_per_epoch"]
    cost = ("about the same CPU per epoch" if 0.9 <= ratio <= 1.1 else
            f"x{ratio:.2f} the CPU per epoch")
    return f"{accuracy}; {cost}"


def change_text(entry):
    """What a lever changed in its run, where the base decides it: 'batch 64', 'off: elastic_alpha', 'filters x2'."""
    changes, base = entry["changes"], entry["setup"]["base_training"]
    parts = []
    for key, value in changes.get("training", {}).items():
        if key == "augmentation":
            before, after = set(base["augmentation"] or {}), set(value or {})
            parts += [f"{verb}: {', '.join(sorted(keys))}" for verb, keys in (("on", after - before),
                                                                             ("off", before - after)) if keys]
        elif key == "learning_rate":
            parts.append(f"peak {value:g}")
        elif key == "batch_size":
            parts.append(f"batch {value}")
        elif key == "epochs":
            parts.append(plural(value, "epoch"))
        elif key in ("label_smoothing", "use_ema", "early_stopping_patience"):
            parts.append(f"{key} {value}")
    if "width" in changes:
        parts.append(f"filters x{changes['width']:g}")
    if changes.get("members"):
        parts.append(f"{changes['members']} members")
    if changes.get("extra_blocks"):
        parts.append("residual blocks x2")
    if "train_images" in changes:
        parts.append(f"{changes['train_images']:,} images")
    return "; ".join(parts)


def training_levers_markdown(levers, section="training"):
    """One row per training lever, measured or not: final accuracy, change against the base, CPU per epoch, verdict.

    `section` is "training" (the levers measured now) or one of EARLIER_STUDIES (kept as they were
    measured, levers since removed included).
    """
    measured = {name: entry for name, entry in (levers or {}).get(section, {}).items()
                if not entry["setup"].get("quick")}
    base = measured.get("base")
    lines = []
    if base:
        setup, training = base["setup"], base["setup"]["base_training"]
        augmentation = ", ".join(f"{key} {value}" for key, value in (training["augmentation"] or {}).items()) or "none"
        split = ("the last 12,000 training images" if section == "training_8_epochs" else
                 "whole writers, none of whom wrote a training digit; measured after the last epoch, for weight "
                 "averaging with the averages")
        lines += [
            f"Training levers, each changing one thing of the base: the notebook's `{setup['model']}` cloned from "
            "`saved_models/` and trained with the recipe `figures/metrics.json` recorded when the base was measured "
            f"({plural(setup['epochs'], 'epoch')} of "
            f"{setup['train_images']:,} images, batch {training['batch_size']}, {training['schedule']} schedule with "
            f"peak {training['learning_rate']:g}, augmentation: {augmentation}), {seeds_text(setup['seeds'])}; base "
            f"measured {base['date'][:10]}. Final test and validation accuracy: mean over the seeds (lowest-highest); "
            f"the validation split ({split}) is what a choice of recipe rests on; its cell is "
            "blank for runs measured before it was recorded and for the fit on all training images. CPU seconds "
            "per epoch: the median epoch of all seeds, the validation pass included.",
            "",
        ]
    else:
        lines += [f"Training levers: the base (the notebook's best recipe) is {NOT_MEASURED}; run `make levers`.", ""]
    lines += ["| lever | what changes | final test accuracy | change vs base | final validation accuracy | "
              "CPU s per epoch | verdict |",
              "| --- | --- | --- | ---: | --- | ---: | --- |"]
    listed = lever_definitions.TRAINING_LEVERS if section == "training" else {}
    for name, description in {**listed, **{name: entry["description"] for name, entry in measured.items()
                                           if name not in listed}}.items():
        entry = measured.get(name)
        if entry is None:
            lines.append(f"| `{name}` | {description} | {NOT_MEASURED} | | | | |")
            continue
        summary = entry["summary"]
        if name == "base":
            change, judgement = "", verdict(name, entry, base)
        elif base is None or entry["setup"] != base["setup"]:
            change, judgement = "", "no comparison: the base was measured with other settings"
        else:
            difference = summary["final_test_accuracy"]["mean"] - base["summary"]["final_test_accuracy"]["mean"]
            change = f"{difference * 100:+.2f}"
            judgement = verdict(name, entry, base)
        actual = change_text(entry)
        description = f"{description} ({actual})" if actual else description
        validation = summary.get("final_validation_accuracy")
        lines.append(f"| `{name}` | {description} | {accuracy_text(summary['final_test_accuracy'])} | {change} | "
                     f"{accuracy_text(validation) if validation else ''} | "
                     f"{summary['cpu_seconds_per_epoch']:.1f} | {judgement} |")
    return "\n".join(lines)


def throughput_markdown(levers):
    """One row per throughput lever, with its speed-up against the line it changes."""
    throughput = levers["throughput"]
    dates = sorted(entry["date"][:10] for entry in throughput.values() if "date" in entry)
    measured = f"measured {dates[0]}" + (f" to {dates[-1]}" if dates and dates[-1] != dates[0] else "") if dates else ""
    images = next((entry["images"] for entry in throughput.values() if "images" in entry),
                  levers.get("throughput_images", lever_definitions.THROUGHPUT_IMAGES))
    lines = [
        f"Training throughput of the notebook's models (cloned), the median of three epochs of "
        f"{images:,} images after a traced warm-up, "
        f"each lever in a fresh process ({levers['cpu']}{', ' + measured if measured else ''}). CPU seconds per "
        "1,000 images move less than the wall clock when the machine's neighbours are busy; compare both before "
        "trusting a speed-up under about 15%:",
        "",
        "| lever | what changes | train images/s | s per 60k images | speed-up vs its reference "
        "| CPU s per 1k images | GFLOP/s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, entry in throughput.items():
        if "error" in entry:
            lines.append(f"| `{name}` | {entry['description']} | failed: {entry['error']} | | | | |")
            continue
        reference, speedup = entry.get("reference"), ""
        if reference and "images_per_second" in throughput.get(reference, {}):
            speedup = f"x{entry['images_per_second'] / throughput[reference]['images_per_second']:.2f} vs `{reference}`"
        cpu = entry.get("cpu_seconds_per_1k_images")
        lines.append(f"| `{name}` | {entry['description']} | {entry['images_per_second']:,} | "
                     f"{entry['seconds_per_60k_images']:.1f} | {speedup} | {'' if cpu is None else f'{cpu:.3f}'} | "
                     f"{entry['training_gflops_per_second']:.1f} |")
    return "\n".join(lines)


def notebook_cost_markdown(metrics, models_dir, ceiling=None):
    """Multiply-adds per image of each saved notebook model, and the training GFLOP/s of the full run.

    The multiply-adds are counted on the saved models (loaded in safe mode); the throughput is
    the run's training images times epochs over its training seconds, which include each epoch's
    validation pass, so it understates the training step's own speed a little.
    """
    train_images = metrics["run"]["train_images"]
    lines = [
        "Model cost of the notebook's models, counted on `saved_models/` (Conv2D and Dense multiply-adds of "
        f"one forward pass), and the training throughput of the committed full run ({metrics['run'].get('cpu')}; "
        "training images x epochs / training seconds, the validation pass included):",
        "",
        "| model | multiply-adds per image | parameters | train images/s | training GFLOP/s |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, entry in metrics["models"].items():
        path = Path(models_dir) / f"{name}.keras"
        if "members" in entry or not path.is_file():
            continue
        multiply_adds = recipes.count_multiply_adds(helpers.load_saved_model(path))
        images_per_second = train_images * entry["epochs"] / entry["train_seconds"]
        gflops = recipes.training_gflops(multiply_adds, images_per_second)
        lines.append(f"| `{name}` | {multiply_adds:,} | {entry['params']:,} | {images_per_second:,.0f} | "
                     f"{gflops:.1f} |")
    if ceiling:
        lines += ["", f"For scale: a large float32 matrix product reaches {ceiling} GFLOP/s on this CPU."]
    return "\n".join(lines)


# ==================== The README's summary ===========================================


def performance_summary(results):
    """The time-to-accuracy table for the main README, in a few lines."""
    if results is None:
        return (f"Time to accuracy of the original and the best recipe: {NOT_MEASURED}; run `make benchmark`.\n"
                "What each lever gave, including those that did not help, is in "
                "[benchmarks/README.md](benchmarks/README.md).")
    thresholds = list(recipes.THRESHOLDS)
    lines = [
        f"On {results['cpu']} (measured {results['date'][:10]} with `make benchmark`, {seeds_text(results['seeds'])}; "
        "mean seconds over the seeds, lowest-highest in brackets):",
        "",
        "| recipe | " + " | ".join(f"to {label}%" for label in thresholds) + " | final test accuracy |",
        "| --- |" + " --- |" * (len(thresholds) + 1),
    ]
    for key in RECIPES:
        if key not in results["recipes"]:
            lines.append(f"| {key} | {NOT_MEASURED} |" + " |" * len(thresholds))
            continue
        summary = results["recipes"][key]["summary"]
        lines.append(f"| {recipe_label(results, key)} | "
                     + " | ".join(reached_text(summary, label) for label in thresholds)
                     + f" | {accuracy_text(summary['final_test_accuracy'])} |")
    ratio = results.get("ratio_seconds_to_99.0")
    lines += ["", f"Time to 99.0%, best / original: **{ratio:.2f}**." if ratio is not None else
              "No ratio of the times to 99.0% yet: not every seed of both recipes reached it, or one recipe is "
              f"{NOT_MEASURED}."]
    if results.get("lengths"):
        lines.append(fast_recipe_text(results))
    lines.append("What each lever gave, including those that did not help, is in "
                 "[benchmarks/README.md](benchmarks/README.md).")
    return "\n".join(lines)


def main(root=recipes.PROJECT_ROOT):
    root = Path(root)
    results = read_optional_json(root / "benchmarks" / "results.json", "benchmark results file")
    if results is not None and results.get("quick"):
        raise ValueError(f"{root / 'benchmarks' / 'results.json'}: comes from a --quick run; run "
                         "`python -m benchmarks.time_to_accuracy` without --quick first.")
    if results is not None and "recipes" not in results:
        raise ValueError(f"{root / 'benchmarks' / 'results.json'}: written by an older benchmark (no 'recipes'); "
                         "run `make benchmark` to measure again.")
    levers = read_optional_json(root / "benchmarks" / "levers.json", "levers file") or {}
    metrics = read_optional_json(root / "figures" / "metrics.json", "notebook metrics file")

    parts = ["### Time to accuracy", time_to_accuracy_markdown(results)]
    if results and results.get("lengths"):
        parts += ["### Shorter complete runs: the fast recipe", lengths_markdown(results)]
    parts += ["### Training levers", training_levers_markdown(levers)]
    for section, title in EARLIER_STUDIES.items():
        if levers.get(section):
            parts += [f"### {title}", training_levers_markdown(levers, section)]
    if levers.get("throughput"):
        parts += ["### Throughput levers", throughput_markdown(levers)]
    if metrics is not None and not metrics["run"].get("quick"):
        # The matrix-product ceiling is only a scale for the run's throughput when both come from one CPU.
        same_cpu = results and results["cpu"] == metrics["run"].get("cpu")
        parts += ["### Model cost", notebook_cost_markdown(metrics, root / "saved_models",
                                                           results["matmul_gflops_per_second"] if same_cpu else None)]
    helpers.replace_between_markers(root / "benchmarks" / "README.md", "\n\n".join(parts),
                                    "<!-- benchmark:start -->", "<!-- benchmark:end -->")
    helpers.replace_between_markers(root / "README.md", performance_summary(results),
                                    "<!-- performance:start -->", "<!-- performance:end -->")
    print("updated benchmarks/README.md and README.md")


if __name__ == "__main__":
    main()
