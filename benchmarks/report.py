"""Write the measured tables into benchmarks/README.md and the README's performance section.

Reads benchmarks/results.json (time_to_accuracy.py), benchmarks/levers.json (levers.py) and
figures/metrics.json (the notebook's full run), so every number in the two READMEs comes from
a file that a run wrote, never from memory:

    python benchmarks/report.py
"""

import json
import re
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

import helpers  # noqa: E402
from time_to_accuracy import training_gflops  # noqa: E402

BASELINES = ("dnn", "cnn_basic", "cnn_optimized")
# Which throughput levers measure each notebook baseline before (float64 NumPy) and after (tf.data).
NOTEBOOK_LEVERS = {"dnn": ("notebook_dnn_float64", "notebook_dnn_tf_data"),
                   "cnn_basic": ("seed", "tf_data"),
                   "cnn_optimized": ("notebook_cnn_optimized_float64", "notebook_cnn_optimized_tf_data")}


def reached(entry, label):
    hit = entry["seconds_to"][label]
    return f"{hit['seconds']:.1f} s (epoch {hit['epoch']})" if hit else "not reached"


def time_to_accuracy_markdown(results):
    """The seed against the project's recipe: seconds to each accuracy, throughput, cost."""
    lines = [
        f"Measured {results['date'][:10]} on {results['cpu']} (TensorFlow {results['tensorflow']}, "
        f"Keras {results['keras']}), both recipes in one process, one after the other.",
        "",
        "| recipe | to 99.0% | to 99.5% | final test accuracy | training s | train images/s "
        "| inference images/s | multiply-adds per image | training GFLOP/s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key in ("seed", "project"):
        entry = results[key]
        lines.append(
            f"| {key} | {reached(entry, '99.0')} | {reached(entry, '99.5')} | "
            f"{entry['test_accuracy'][-1] * 100:.2f}% ({len(entry['test_accuracy'])} epochs) | "
            f"{entry['epoch_seconds_cumulative'][-1]:.1f} | {entry['train_images_per_second']:,} | "
            f"{entry['inference_images_per_second']:,} | {entry['multiply_adds_per_image']:,} | "
            f"{entry['training_gflops_per_second']:.1f} |")
    ratio = results["ratio_seconds_to_99.0"]
    ceiling = results["matmul_gflops_per_second"]
    lines += [
        "",
        (f"**Seconds to 99.0% test accuracy, project / seed: {ratio:.3f}** (target at most 0.3)."
         if ratio is not None else "**One of the recipes did not reach 99.0%, so there is no ratio.**"),
        "",
        f"A large float32 matrix product reaches {ceiling} GFLOP/s on this CPU; the project's training "
        f"runs at {results['project']['training_gflops_per_second'] / ceiling * 100:.0f}% of that and the "
        f"seed's at {results['seed']['training_gflops_per_second'] / ceiling * 100:.0f}%. Small convolutions, "
        "batch normalization, pooling and the optimizer's updates are memory-bound, which is where the "
        "rest goes.",
        "",
        "Test accuracy after each epoch (cumulative training seconds in brackets):",
        "",
    ]
    for key in ("seed", "project"):
        entry = results[key]
        steps = ", ".join(f"{accuracy * 100:.2f}% ({seconds:.0f} s)" for accuracy, seconds in
                          zip(entry["test_accuracy"], entry["epoch_seconds_cumulative"]))
        lines.append(f"- {key}: {steps}")
    return "\n".join(lines)


def throughput_markdown(levers):
    """One row per throughput lever, with its speed-up against the line it changes."""
    throughput = levers["throughput"]
    lines = [
        f"Training throughput, the median of three epochs of {levers['throughput_images']:,} images after a "
        f"traced warm-up, each lever in a fresh process ({levers['cpu']}, measured "
        f"{levers['throughput_date'][:10]}). CPU seconds per 1,000 images move less than the wall clock "
        "when the machine's neighbours are busy; compare both before trusting a speed-up under about 15%:",
        "",
        "| lever | what changes | train images/s | s per 60k images | speed-up vs its reference "
        "| CPU s per 1k images | GFLOP/s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, entry in throughput.items():
        if "error" in entry:
            lines.append(f"| `{name}` | {entry['description']} | failed: {entry['error']} | | | | |")
            continue
        reference = re.search(r"\(vs (\w+)\)", entry["description"])
        speedup = ""
        if reference and "images_per_second" in throughput.get(reference.group(1), {}):
            speedup = f"x{entry['images_per_second'] / throughput[reference.group(1)]['images_per_second']:.2f}"
        cpu = entry.get("cpu_seconds_per_1k_images")
        lines.append(f"| `{name}` | {entry['description']} | {entry['images_per_second']:,} | "
                     f"{entry['seconds_per_60k_images']:.1f} | {speedup} | {'' if cpu is None else f'{cpu:.3f}'} | "
                     f"{entry['training_gflops_per_second']:.1f} |")
    return "\n".join(lines)


def accuracy_markdown(levers):
    """The fast recipe with one thing changed at a time, a few epochs each."""
    lines = [
        f"Accuracy levers: the fast model on all 60,000 training images for {levers['accuracy_epochs']} epochs "
        f"(its schedule sized to them), one change at a time (measured {levers['accuracy_date'][:10]}):",
        "",
        "| lever | what changes | test accuracy after each epoch | training s | to 99.0% |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, entry in levers["accuracy"].items():
        accuracies = " / ".join(f"{accuracy * 100:.2f}%" for accuracy in entry["test_accuracy"])
        lines.append(f"| `{name}` | {entry['description']} | {accuracies} | "
                     f"{entry['epoch_seconds_cumulative'][-1]:.1f} | {reached(entry, '99.0')} |")
    return "\n".join(lines)


def notebook_before_after(levers, metrics):
    """The baselines' training seconds in the full run, and what float64 NumPy inputs would have cost.

    The 'before' is an estimate: each model's measured training seconds scaled by the ratio of its
    epoch times with float64 NumPy arrays and with float32 tf.data (levers.py, same batch size).
    """
    throughput = levers.get("throughput", {})
    rows, after_total, before_total = [], 0.0, 0.0
    for name in BASELINES:
        before_lever, after_lever = NOTEBOOK_LEVERS[name]
        if not all("images_per_second" in throughput.get(lever, {}) for lever in (before_lever, after_lever)):
            return None
        ratio = throughput[after_lever]["images_per_second"] / throughput[before_lever]["images_per_second"]
        after = metrics["models"][name]["train_seconds"]
        rows.append((name, after * ratio, after, ratio))
        after_total += after
        before_total += after * ratio
    sections = metrics["run"].get("section_seconds", {})
    lines = [
        "The notebook's models keep their definitions and batch size; only their input changed, from "
        "float64 NumPy arrays to float32 in a cached, prefetched `tf.data` pipeline. Training seconds of "
        "the baselines in the committed full run, and an estimate of the same training with float64 arrays "
        "(the measured seconds times the throughput ratio of the two inputs above):",
        "",
        "| model | before (float64 NumPy, estimated) | after (float32 tf.data, measured) | speed-up |",
        "| --- | --- | --- | --- |",
    ]
    for name, before, after, ratio in rows:
        lines.append(f"| `{name}` | {before:.0f} s | {after:.0f} s | x{ratio:.2f} |")
    lines.append(f"| all three | {before_total:.0f} s | {after_total:.0f} s | x{before_total / after_total:.2f} |")
    total = metrics["run"]["total_seconds"]
    lines += ["", f"The whole notebook took {total / 60:.1f} min in the committed run "
                  f"(baselines {sections.get('training', after_total) / 60:.1f} min); the float64 input would have "
                  f"added about {(before_total - after_total) / 60:.1f} min to the baselines alone."]
    return "\n".join(lines)


def notebook_cost_markdown(metrics, models_dir, ceiling=None):
    """Multiply-adds per image of each saved notebook model, and the training GFLOP/s of the full run.

    The multiply-adds are counted on the saved models (loaded in safe mode); the throughput is
    the run's training images times epochs over its training seconds, which include each epoch's
    validation pass, so it understates the training step's own speed a little.
    """
    import keras

    train_images = metrics["run"]["train_images"]
    lines = [
        "Model cost of the notebook's models, counted on `saved_models/` (Conv2D and Dense multiply-adds of "
        "one forward pass), and the training throughput of the committed full run (training images x epochs "
        "/ training seconds, the validation pass included):",
        "",
        "| model | multiply-adds per image | parameters | train images/s | training GFLOP/s |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, entry in metrics["models"].items():
        path = Path(models_dir) / f"{name}.keras"
        if "members" in entry or not path.is_file():
            continue
        multiply_adds = helpers.count_multiply_adds(keras.saving.load_model(path, safe_mode=True, compile=False))
        images_per_second = train_images * entry["epochs"] / entry["train_seconds"]
        gflops = training_gflops(multiply_adds, images_per_second)
        lines.append(f"| `{name}` | {multiply_adds:,} | {entry['params']:,} | {images_per_second:,.0f} | {gflops:.1f} |")
    if ceiling:
        lines += ["", f"For scale: a large float32 matrix product reaches {ceiling} GFLOP/s on this CPU."]
    return "\n".join(lines)


def performance_summary(results):
    """A few lines for the main README."""
    seed, project = results["seed"], results["project"]
    ratio = results["ratio_seconds_to_99.0"]
    return "\n".join([
        f"On {results['cpu']} (measured {results['date'][:10]} with `python benchmarks/time_to_accuracy.py`):",
        "",
        "| recipe | to 99.0% test accuracy | to 99.5% | final |",
        "| --- | --- | --- | --- |",
        f"| seed (basic CNN, float64, batch 64, 10 epochs) | {reached(seed, '99.0')} | {reached(seed, '99.5')} | "
        f"{seed['test_accuracy'][-1] * 100:.2f}% |",
        f"| project (fast CNN, tf.data, one cycle, batch {results['project_recipe']['batch_size']}) | "
        f"{reached(project, '99.0')} | {reached(project, '99.5')} | {project['test_accuracy'][-1] * 100:.2f}% |",
        "",
        (f"Time to 99.0%, project / seed: **{ratio:.2f}**." if ratio is not None else
         "One recipe did not reach 99.0%, so there is no ratio."),
        "What each lever gave, including those that did not help, is in [benchmarks/README.md](benchmarks/README.md).",
    ])


def main(root=PROJECT_ROOT):
    root = Path(root)
    results = json.loads((root / "benchmarks" / "results.json").read_text())
    if results.get("quick"):
        raise ValueError("benchmarks/results.json comes from a --quick run; run "
                         "`python benchmarks/time_to_accuracy.py` without --quick first.")
    levers_path = root / "benchmarks" / "levers.json"
    levers = json.loads(levers_path.read_text()) if levers_path.is_file() else {}
    metrics_path = root / "figures" / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else None

    parts = [time_to_accuracy_markdown(results)]
    if "throughput" in levers:
        parts.append(throughput_markdown(levers))
    if "accuracy" in levers:
        parts.append(accuracy_markdown(levers))
    if metrics is not None and not metrics["run"].get("quick"):
        before_after = notebook_before_after(levers, metrics)
        if before_after:
            parts.append(before_after)
        parts.append(notebook_cost_markdown(metrics, root / "saved_models", results["matmul_gflops_per_second"]))
    helpers.replace_between_markers(root / "benchmarks" / "README.md", "\n\n".join(parts),
                                    "<!-- benchmark:start -->", "<!-- benchmark:end -->")
    helpers.replace_between_markers(root / "README.md", performance_summary(results),
                                    "<!-- performance:start -->", "<!-- performance:end -->")
    print("updated benchmarks/README.md and README.md")


if __name__ == "__main__":
    main()
