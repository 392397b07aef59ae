"""``fmnist-bench report``: REPORT.md with the report's Tables 1-5 beside ours, figures, and latency.

    fmnist-bench report                         # artifacts/reports/REPORT.md
    fmnist-bench report --out docs/results      # a copy to commit: Markdown and small PNGs, no models

It opens with "At a glance": a headline and the figures of bench/report/figures.py in ``<out>/plots/``. A section
or figure whose inputs do not exist yet is replaced by a note naming the command that makes them. It lives in
bench, the top layer, because it reads what every layer wrote.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from bench.measure.machine import commit_info
from bench.report import figures
from bench.results.store import find_results
from bench.results.summary import MAX_ACCURACY_LOSS_POINTS, Records, latest_records, markdown_summary, runtime_name
from trainer import quiet
from trainer.artifacts import Artifacts, write_text_atomic
from trainer.config import DEFAULTS
from trainer.environment import describe_machine, machine_info
from trainer.experiments import read_experiments
from exporter.contract import read_manifest
from exporter.publish import current
from trainer.catalog import display_name, is_yours, label, model_info, model_order, study_models
from trainer.reports import (REPORT_EXPERIMENTS, REPORT_MODEL4_EVALUATE_MS, REPORT_MODEL4_PREDICT_MS, RunMetadata, table1,
                             trained_models)

PROG = "fmnist-bench report"
BENCH_COMMAND = "fmnist-export all && fmnist-bench run"
# Our figures in <out>/plots/: one not drawn this time is removed, so a copied report never shows an old one.
FIGURE_GLOBS = ("tradeoff.png", "latency-*.png", "server-*.png", "confusion-*.png")
# Per swept parameter: its column heading, its type in experiments.csv, its table and the command that fills it.
EXPERIMENT_TABLES = {
    "optimizer": ("Optimizer", str, "Table 2: Model 4, optimizers", "fmnist-train sweep model4 --grid optimizer=sgd,adam"),
    "batch_size": ("Batch", int, "Table 3: Model 4, batch size", "fmnist-train sweep model4 --grid batch_size=16,32,64,128"),
    "lr": ("LR", float, "Table 4: Model 4, learning rate", "fmnist-train sweep model4 --grid lr=0.01,0.02,0.001,0.002"),
    "epochs": ("Epochs", int, "Table 5: Model 4, epochs", "fmnist-train sweep model4 --grid epochs=10,30,50,70"),
}
# The report's protocol, the training defaults: a row stands beside the report's numbers only when every setting
# it does not vary is this.
REPORT_FIXED = {"optimizer": DEFAULTS.optimizer, "batch_size": DEFAULTS.batch_size, "lr": DEFAULTS.lr, "epochs": DEFAULTS.epochs}


def _md(frame: pd.DataFrame) -> str:
    # tabulate's missingval replaces None only: NaN (a number the report does not give) becomes None first.
    return frame.astype(object).where(frame.notna(), None).to_markdown(index=False, floatfmt=".4f", missingval="")


def data_section(metas: dict[str, RunMetadata]) -> str:
    d = next(iter(metas.values())).data
    classes = "\n".join(f"- {name}" for name in d["class_names"])
    return (f"## Data\n\nSource: `{d['source']}`, {d['images']:,} images (sha256 `{d['sha256'][:16]}…`). "
            f"Split: {d['split_protocol']}; train {d['split']['train']:,}, validation {d['split']['val']:,}, test {d['split']['test']:,}.\n\n"
            f"Classes:\n\n{classes}\n")


def table1_section(artifacts: Artifacts, metas: dict[str, RunMetadata]) -> str:
    machine = next(iter(metas.values())).machine
    yours = any(is_yours(name) for name in metas)
    title = "the six models and yours" if yours else "the six models"
    mine = " Models marked (yours) are your own, trained under the same protocol; the report has no figures for them." if yours else ""
    return (f"## Table 1: {title}\n\nOurs beside the report's (test accuracy and training time). "
            f"Training time on {describe_machine(machine)}; the report's on its own machine.{mine}\n\n"
            f"{_md(table1(artifacts, list(metas)))}\n")


def yours_section(artifacts: Artifacts, metas: dict[str, RunMetadata]) -> str:
    """The user's own models: where each came from, what was done to it, and what its exported variants scored."""
    manifest = read_manifest(current(artifacts.onnx_dir)) if artifacts.onnx_dir.exists() else None
    records = manifest.models if manifest else {}
    names = sorted({n for n in metas if is_yours(n)} | {n for n in records if is_yours(n)}, key=model_order)
    if not names:
        return ""
    rows = []
    for name in names:
        origin, meta = records.get(name, {}).get("origin") or {}, metas.get(name)
        if origin.get("kind") == "onnx":
            kind, accuracy = "ONNX file (`fmnist-export --onnx`)", origin.get("test_accuracy")
            done = "; ".join(origin.get("added") or []) or "nothing: it kept to the contract already"
        else:
            origin = (meta.extra.get("model_file") if meta else None) or origin
            kind, accuracy = "Keras model file (`--model-file`)", meta.test["accuracy"] if meta else None
            epochs = meta.config["epochs"] if meta else 0
            done = (f"trained {epochs} epoch{'s' if epochs != 1 else ''}, {meta.config['optimizer']}, batch {meta.config['batch_size']}"
                    if meta else "trained elsewhere")
        source = f"`{Path(origin['path']).name}` (sha256 `{origin['sha256'][:12]}…`)" if origin.get("path") else "unknown"
        variants = [f for f in manifest.files.values() if f.model == name] if manifest else []
        exported = ", ".join(f"{f.variant} {f.validation['accuracy_onnx']:.4f}" for f in variants) or "not exported yet"
        rows.append({"Model": label(name), "Kind": kind, "Source": source, "What was done": done,
                     "Source test accuracy": accuracy, "Exported (ONNX test accuracy)": exported})
    return ("## Your models\n\nModels of your own, on the same data split, exporter gates and bench as the study's six, "
            "and marked (yours) in every table. An imported ONNX file is judged against itself (the original file run "
            "with onnxruntime) where a Keras model is judged against Keras; it has no `.keras` source, so its Keras, "
            f"TF Lite and LiteRT rows are skipped and say so.\n\n{_md(pd.DataFrame(rows))}\n")


def experiment_section(artifacts: Artifacts, model: str = "model4") -> str:
    experiments = read_experiments(artifacts.experiments_file)
    parts = ["## Tables 2-5: Model 4 experiments\n"]
    for param, (_, kind, title, command) in EXPERIMENT_TABLES.items():
        rows = experiments[(experiments["model"] == model) & experiments["sweep"].astype(str).str.contains(f"{param}=", regex=False)]
        if rows.empty:
            parts.append(f"### {title}\n\n_Not run yet._ Make it with `{command}`.\n")
            continue
        report = [REPORT_EXPERIMENTS[param].get(kind(row[param]), {}) if _comparable(row, param) else {}
                  for _, row in rows.iterrows()]
        shortened = not all(report)  # some rows have no study numbers beside them
        study = pd.DataFrame(report, index=rows.index, columns=["test_accuracy", "training_min"]).apply(pd.to_numeric)
        frame = pd.DataFrame({
            "Epochs": rows["epochs"], "Batch": rows["batch_size"], "Optimizer": rows["optimizer"], "LR": rows["lr"],
            "Train Accuracy": rows["train_accuracy"], "Val Accuracy": rows["val_accuracy"],
            "Train Loss": rows["train_loss"], "Val Loss": rows["val_loss"],
            "Test Accuracy": rows["test_accuracy"], "Report Test Accuracy": study["test_accuracy"],
            "Training Time (min)": rows["training_time_min"], "Report Training Time (min)": study["training_min"],
            "Measured as": rows["measured_as"],
        })
        frame.insert(frame.columns.get_loc("Report Test Accuracy") + 1, "Δ Test Accuracy",
                     frame["Test Accuracy"] - frame["Report Test Accuracy"])
        optimizer = {"adam": "Adam", "sgd": "SGD"}.get(DEFAULTS.optimizer, DEFAULTS.optimizer)
        caption = (f"{title}. Other settings as the report ({optimizer}, batch {DEFAULTS.batch_size}, lr {DEFAULTS.lr:g}) "
                   f"unless the row says otherwise; epochs {', '.join(map(str, sorted(set(rows['epochs']))))} (the report: "
                   "50, and 10-70 in Table 5). The report's numbers stand only beside rows whose other settings are the report's.")
        if shortened:
            caption += f" At the study's settings: `{command}` (rows already run are skipped)."
        parts.append(f"### {title}\n\n{caption}\n\n{_md(frame)}\n")
        if shortened:  # the study's table whole, below ours
            parts.append(f"The report's own {title.split(':')[0]}, for reference (its epochs):\n\n{_report_table(param)}\n")
    return "\n".join(parts)


def _comparable(row: pd.Series, param: str) -> bool:
    """Whether a row varies only ``param`` from the report's settings (Table 2 used each optimizer's default lr)."""
    fixed = {k: v for k, v in REPORT_FIXED.items() if k != param and not (param == "optimizer" and k == "lr")}
    return all(EXPERIMENT_TABLES[k][1](row[k]) == v for k, v in fixed.items())


def _report_table(param: str) -> str:
    names = {"train_accuracy": "Train Accuracy", "val_accuracy": "Val Accuracy", "train_loss": "Train Loss",
             "val_loss": "Val Loss", "test_accuracy": "Test Accuracy", "training_min": "Training Time (min)"}
    frame = pd.DataFrame.from_dict(REPORT_EXPERIMENTS[param], orient="index").rename(columns=names)
    return _md(frame.rename_axis(EXPERIMENT_TABLES[param][0]).reset_index())


def figures_section(artifacts: Artifacts, out: Path, metas: dict[str, RunMetadata]) -> str:
    lines = ["## Accuracy and loss\n", "The report's 2x2 figure per model: accuracy vs loss, and both vs epoch, training and validation.\n"]
    (out / "plots").mkdir(parents=True, exist_ok=True)
    for name, meta in metas.items():
        source = artifacts.plot_file(name)
        if source.exists():
            if source.resolve() != (out / "plots" / source.name).resolve():
                shutil.copyfile(source, out / "plots" / source.name)
            lines.append(f"### {meta.display_name}\n\n![{meta.display_name}](plots/{source.name})\n")
    return "\n".join(lines)


def best_model_section(metas: dict[str, RunMetadata]) -> str:
    best = max(metas.values(), key=lambda m: m.test["accuracy"])
    report = pd.DataFrame(best.test["classification_report"]).T.reset_index(names="")
    matrix = pd.DataFrame(best.test["confusion_matrix"], columns=[f"pred {i + 1}" for i in range(5)])
    matrix.insert(0, "true", [f"Class {i + 1}" for i in range(5)])
    return (f"## Best model: {best.display_name} (test accuracy {best.test['accuracy']:.4f})\n\n"
            f"Classification report (scikit-learn):\n\n{_md(report)}\n\nConfusion matrix:\n\n{matrix.to_markdown(index=False)}\n")


def latency_section(artifacts: Artifacts, metas: dict[str, RunMetadata]) -> str:
    parts = ["## Latency\n"]
    if "model4" in metas:
        test = metas["model4"].test
        frame = pd.DataFrame([
            {"Model 4, Keras on 6,000 test images": f"{call} (ms)", "report": report_ms,
             "ours, first call": test[f"{call}_s"] * 1000, "ours, warm median": test[f"{call}_warm_median_s"] * 1000}
            for call, report_ms in (("evaluate", REPORT_MODEL4_EVALUATE_MS), ("predict", REPORT_MODEL4_PREDICT_MS))])
        parts.append(f"The report's %%time wall times (its machine unnamed) beside ours on "
                     f"{describe_machine(metas['model4'].machine)}, Keras batch 32 as the report:\n\n"
                     f"{frame.to_markdown(index=False, floatfmt='.0f')}\n")
    reports = find_results(artifacts.reports_dir)
    if not reports:
        parts.append(f"_No bench results yet._ Make them with `{BENCH_COMMAND}`.\n")
        return "\n".join(parts)
    records = latest_records(reports)
    parts += ["Every exported model on each runtime (`fmnist-bench summary` of the reports below; a case measured "
              f"in several keeps its newest result):\n\n{markdown_summary(reports)}", profile_section(records), tools_section(records)]
    return "\n".join(parts)


def tools_section(records: Records) -> str:
    """Our OpenVINO and LiteRT rows beside what those runtimes' own benchmark tools measured on the same files."""
    rows, missing = [], []
    for record, _ in records.values():
        tool = record.tool
        if not tool or record.skipped:
            continue
        name = runtime_name(record.provider, record.variant, record)
        if "unavailable" in tool:
            missing.append(f"{name} ({record.operation}): {tool['unavailable']}")
            continue
        single = record.operation == "single-stream"
        ours = (record.latency_ms or {}).get("p50") if single else record.throughput_ips
        theirs = tool["median_ms"] if single else tool.get("throughput_ips")
        rows.append({"model": display_name(record.model), "row": name,
                     "measure": "single-stream p50 ms" if single else f"images/s at batch {record.batch_size}",
                     "ours": ours, "the tool's": theirs, "ours / tool": ours / theirs if ours and theirs else None,
                     "tool": tool["command"]})
    if not rows and not missing:
        return ""
    text = ("### Beside the runtimes' own tools\n\nOpenVINO's `benchmark_app` and LiteRT's `litert-benchmark` on the same files "
            "and shapes, in the same run (`--tools on`): latency is the median per query (lower is faster), throughput "
            "images per second (higher is faster). What each timer includes is in docs/measurement.md; a ratio far "
            "from 1 is that difference, or a finding.\n")
    if rows:
        text += "\n" + pd.DataFrame(rows).to_markdown(index=False, floatfmt=".3f") + "\n"
    return text + "".join(f"\nNot cross-checked: {line}\n" for line in missing)


def profile_section(records: Records, top: int = 5) -> str:
    """Where the time goes, per row that has a profile: its top op types by time beside their multiply-adds."""
    profiled = [record for record, _ in records.values() if record.profile and not record.skipped]
    if not profiled:
        return ("### Where the time goes\n\n_No per-operator profile in these results._ `fmnist-bench run` records one "
                "for each onnxruntime (CPU) and OpenVINO row (LiteRT's and TF Lite's Python interpreters give none).\n")
    parts = ["### Where the time goes\n", "Each runtime's own profiler on one predict batch (a second, profiling instance: "
             "never the timed one): the top operator types by their share of the kernel time, beside their share of the "
             "model's multiply-adds. A type far above its multiply-adds is where a runtime loses time; layout reorders, "
             "pooling and quantize nodes do no multiply-adds at all.\n"]
    for record in sorted(profiled, key=lambda r: (r.model, figures.runtime_order(r.provider, r.variant))):
        cells = ", ".join(f"{p['op_type']} {100 * p['time_share']:.0f}% ({100 * p['mac_share']:.0f}%)"
                          for p in record.profile[:top])
        parts.append(f"- {display_name(record.model)}, {runtime_name(record.provider, record.variant, record)}, batch "
                     f"{record.batch_size}: {cells}")
    return "\n".join(parts) + "\n\n(op type time% (multiply-adds%))\n"


# --------------------------------------------------------------------------------------------------
# At a glance: a headline and the figures (bench/report/figures.py); each part returns its text and the
# figure it drew, if any.


def _headline(best: RunMetadata, points: list[figures.Point], batch: int | None) -> str:
    """Best accuracy; the fastest runtime within MAX_ACCURACY_LOSS_POINTS of fp32 for that model, and its ratio to Keras."""
    split = best.data.get("split", {}).get("test")
    text = (f"**Best test accuracy: {best.display_name}, {best.test['accuracy']:.4f}** (Keras, "
            f"{f'{split:,} ' if split else ''}test images).")
    mine = {(p.provider, p.variant): p for p in points if p.model == best.model}
    if not mine:
        return text + (f" It has no bench results yet: `fmnist-export {best.model} && fmnist-bench run --models {best.model}`."
                       if points else "")
    fp32 = mine.get(("cpu", "fp32")) or mine.get(("keras", "fp32"))
    if fp32 is None:
        return text + f" No fp32 row of {best.display_name} at batch {batch} to bound the others by."
    eligible = [p for p in mine.values() if 100 * (fp32.accuracy - p.accuracy) <= MAX_ACCURACY_LOSS_POINTS + 1e-9]
    fastest = min(eligible, key=lambda p: p.ms_per_image)
    text += (f" Its fastest runtime within {MAX_ACCURACY_LOSS_POINTS} points of fp32 ({fp32.runtime}, {fp32.accuracy:.4f}) "
             f"is **{fastest.runtime}**: {figures.format_ms(fastest.ms_per_image)} per image at batch {batch} "
             f"({fastest.images_per_s:,.0f} images/s, accuracy {fastest.accuracy:.4f})")
    keras = mine.get(("keras", "fp32"))
    if keras is not None and fastest is not keras:
        text += f", **{keras.ms_per_image / fastest.ms_per_image:.1f}x** Keras predict ({figures.format_ms(keras.ms_per_image)} per image)"
    elif keras is None:
        text += " (no Keras row to compare with: `fmnist-bench run` without `--no-reference`)"
    return text + "."


def _tradeoff_part(records: Records, batch: int | None, points: list[figures.Point], unmeasured: list[str],
                   plots: Path) -> tuple[str, Path | None]:
    if not points:
        why = "no bench results yet" if not records else f"no bench result has a measured accuracy{f' at batch {batch}' if batch else ''}"
        return f"_No accuracy/speed figure: {why}._ Make it with `{BENCH_COMMAND}`.\n", None
    target = plots / "tradeoff.png"
    front = figures.tradeoff_figure(points, target, batch, {p.model: display_name(p.model) for p in points})
    caption = (f"Test accuracy against predict time per image at batch {batch} (left; log scale, faster to the left) and "
               f"against the model file's size (right): {len(points)} points, {len({p.model for p in points})} model(s) on "
               f"{len({(p.provider, p.variant) for p in points})} runtime(s), each the newest bench result. Circled and "
               f"joined: the Pareto front, {len(front)} point(s) that no other point beats on speed or accuracy without "
               "losing on the other.")
    if unmeasured:
        caption += f" Not drawn (no accuracy measured): {', '.join(sorted(unmeasured))}."
    front_rows = pd.DataFrame([{"#": n, "model": display_name(p.model), "runtime": p.runtime, "ms per image": p.ms_per_image,
                                "images/s": p.images_per_s, "accuracy": p.accuracy, "MB": p.megabytes}
                               for n, p in enumerate((points[i] for i in front), start=1)])
    table = front_rows.to_markdown(index=False, floatfmt=["", "", "", ".4g", ",.0f", ".4f", ".2f"], missingval="")
    return (f"{caption}\n\n![Accuracy against speed and size, with the Pareto front](plots/tradeoff.png)\n\n"
            f"The front, fastest first:\n\n{table}\n"), target


def _latency_part(records: Records, model: str | None, plots: Path) -> tuple[str, Path | None]:
    series = figures.latency_series(records, model) if model else []
    if not series:
        if not records:
            return f"_No latency figure: no bench results yet._ Make them with `{BENCH_COMMAND}`.\n", None
        model = model or "model4"
        return (f"_No single-stream latency figure: no single-stream results for {display_name(model)}._ "
                f"Make them with `fmnist-bench run --models {model} --operations single-stream`.\n"), None
    name, target = display_name(model), plots / f"latency-{model}.png"
    figures.latency_figure(series, target, f"{name}: single-stream latency per query, per runtime (batch 1)")
    caption = (f"{name}, one query at a time (batch 1) as an edge device serves them: the spread of every query's latency "
               f"per runtime, fastest median on top; the median (p50) and the 99th percentile (p99) marked.")
    if partial := [s.runtime for s in series if not s.times_ms]:
        caption += (f" {', '.join(partial)}: p50 and p99 only (reports of schema 1 kept no per-query times); "
                    f"`fmnist-bench run --models {model} --operations single-stream` records them.")
    return f"{caption}\n\n![{name}: single-stream latency per runtime](plots/latency-{model}.png)\n", target


def _server_part(records: Records, model: str, plots: Path) -> tuple[str, Path | None]:
    """The server curve of ``model``, or a note naming the command."""
    name, curves = display_name(model), figures.server_series(records, model)
    if not curves:
        return (f"_No server curve: no server results for {name}._ Make them with "
                f"`fmnist-bench run --models {model} --operations server`.\n"), None
    target = plots / f"server-{model}.png"
    figures.server_figure(curves, target, f"{name}: latency against offered rate, server scenario (MLPerf LoadGen)")
    bounds = " or ".join(f"{b:g}" for b in sorted({c.latency_bound_ms for c in curves}))
    served = [f"{c.runtime} {c.max_qps:,.0f} queries/s" for c in curves if c.max_qps is not None]
    unserved = [f"{c.runtime} ({c.verdict})" if c.verdict else c.runtime for c in curves if c.max_qps is None]
    caption = (f"{name} as a server: queries of one image arriving at random (Poisson) at each offered rate MLPerf LoadGen "
               f"ran while searching for the highest rate whose p99 stays within {bounds} ms (the dotted line), one worker "
               f"answering in arrival order. p99 solid, p50 dashed; filled points LoadGen called VALID; the star is each "
               f"runtime's max rate under the bound.")
    if served:
        caption += f" Max rate under the bound: {'; '.join(served)}."
    if unserved:
        caption += f" No rate tried met the bound: {'; '.join(unserved)}."
    return f"{caption}\n\n![{name}: server latency against offered rate](plots/server-{model}.png)\n", target


def _confusion_part(best: RunMetadata, records: Records, plots: Path) -> tuple[str, Path | None]:
    """The best model's confusion matrix and per-class scores: the trainer's metadata, else the bench's fp32 predict."""
    matrix, scores = best.test.get("confusion_matrix"), best.test.get("classification_report")
    origin = "Keras, the trainer's test evaluation"
    if not matrix:
        for record, _ in records.values():
            quality = record.quality or {}
            if (record.model, record.variant, record.provider, record.operation) == (best.model, "fp32", "cpu", "predict") \
                    and not record.skipped and quality.get("confusion_matrix"):
                matrix, scores, origin = quality["confusion_matrix"], quality.get("per_class"), "onnxruntime CPU fp32, the bench's predict"
                break
    if not matrix:
        return (f"_No confusion matrix for {best.display_name}: its metadata has none._ Retrain it with "
                f"`fmnist-train {best.model}`, or measure it with `fmnist-bench run --models {best.model}`.\n"), None
    # The per-class rows in class order, without a classification report's averages.
    per_class = [v for k, v in (scores or {}).items() if isinstance(v, dict) and k not in ("macro avg", "weighted avg", "micro avg")]
    total, target = sum(map(sum, matrix)), plots / f"confusion-{best.model}.png"
    figures.confusion_figure(matrix, best.data.get("class_names") or [], per_class[:len(matrix)], target,
                             f"{best.display_name} (best test accuracy {best.test['accuracy']:.4f}): {total:,} test images")
    return (f"{best.display_name}, the most accurate model ({origin}): where its {total:,} test images went "
            f"(rows: true class, columns: predicted; the diagonal is right), and each class's precision, recall "
            f"and F1.\n\n![{best.display_name}: confusion matrix and per-class scores](plots/confusion-{best.model}.png)\n"), target


def glance_section(artifacts: Artifacts, out: Path, metas: dict[str, RunMetadata]) -> str:
    """A headline paragraph and the figures; a note naming the command for each figure that cannot be drawn."""
    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    reports = find_results(artifacts.reports_dir)
    records = latest_records(reports) if reports else {}
    best = max(metas.values(), key=lambda m: m.test["accuracy"])
    batch = figures.report_batch(records)
    points, unmeasured = figures.tradeoff_points(records, batch) if batch else ([], [])
    # The model whose latency is drawn: model4 (the report's) when benched, else the first in the registry's order.
    benched = {record.model for record, _ in records.values() if not record.skipped}
    model = "model4" if "model4" in benched else min(benched, key=model_order, default=None)
    parts = [_tradeoff_part(records, batch, points, unmeasured, plots), _latency_part(records, model, plots)]
    if model or records:
        parts.append(_server_part(records, model or "model4", plots))
    parts.append(_confusion_part(best, records, plots))
    written = [target for _, target in parts if target is not None]
    for pattern in FIGURE_GLOBS:
        for stale in plots.glob(pattern):
            if stale not in written:
                stale.unlink(missing_ok=True)
    return "\n".join(["## At a glance\n", _headline(best, points, batch) + "\n", *(text for text, _ in parts)])


def build(artifacts: Artifacts, out: Path) -> Path:
    metas = {name: RunMetadata.read(artifacts.metadata_file(name)) for name in trained_models(artifacts)}  # the six, then yours
    if not metas:
        raise FileNotFoundError(f"{artifacts.root / 'models'}: no trained models to report; run: fmnist-train all")
    out.mkdir(parents=True, exist_ok=True)
    transfer = "; ".join(f"{model_info(n).display_name}: {m.base_weights}" for n, m in metas.items()
                         if n in study_models() and model_info(n).transfer)
    commit = commit_info()
    at = (f"`{commit['id'][:12]}`" + (" with uncommitted changes" if commit["dirty"] else "") if commit["id"]
          else "unknown (not a git checkout)")
    sections = [
        f"# Reproduction report\n\nWritten by `{PROG}` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC "
        f"from `{artifacts.root}`, on {describe_machine(machine_info())}, at commit {at}. Every table and "
        "figure below comes from that folder; each states the machine it was measured on."
        + (f" Base weights of the transfer models: {transfer}." if transfer else "") + "\n",
        glance_section(artifacts, out, metas),
        data_section(metas),
        table1_section(artifacts, metas),
        yours_section(artifacts, metas),
        experiment_section(artifacts),
        figures_section(artifacts, out, metas),
        best_model_section(metas),
        latency_section(artifacts, metas),
    ]
    path = out / "REPORT.md"
    write_text_atomic(path, "\n".join(section for section in sections if section))
    return path


def main(argv: list[str] | None = None) -> int:
    """``fmnist-bench report [--artifacts DIR] [--out DIR]``; exit status 2 with one line when nothing can be reported."""
    parser = argparse.ArgumentParser(prog=PROG, description="Write REPORT.md from the artifacts.")
    parser.add_argument("--artifacts", help="artifacts folder (default: $FMNIST_ARTIFACTS, then ./artifacts)")
    parser.add_argument("--out", help="output folder (default: the artifacts' reports/)")
    quiet.add_flag(parser)
    args = parser.parse_args(argv)
    quiet.configure(args.verbose)
    artifacts = Artifacts.at(args.artifacts)
    out = Path(args.out) if args.out else artifacts.reports_dir
    named = f"{'--out ' if args.out else ''}{out}"
    try:
        path = build(artifacts, out)
    except OSError as exc:
        # errno None: our own one-line errors (no trained models; a damaged models/*.json, which is a
        # MetadataError and names its file). Otherwise the OS refused a read or a write.
        if exc.errno is None:
            message = str(exc)
        elif out.exists() and not out.is_dir():
            message = f"{named}: is a file, not a folder"
        elif exc.filename is not None and out.resolve() in (Path(exc.filename).resolve(), *Path(exc.filename).resolve().parents):
            message = f"{named}: cannot write the report there ({exc.strerror or exc})"
        else:
            message = f"{exc.filename or out}: {exc.strerror or exc}"
        print(f"{PROG}: error: {' '.join(message.split())[:600]}", file=sys.stderr)
        return 2
    except ValueError as exc:  # a damaged experiments table or bench result: its first line, bounded
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        print(f"{PROG}: error: {' '.join(lines[0].split())[:600]}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0
