"""``fmnist-bench report``: REPORT.md with the report's Tables 1-5 beside ours, figures, and latency.

    fmnist-bench report                         # artifacts/reports/REPORT.md
    fmnist-bench report --out docs/results      # a copy to commit: Markdown and small PNGs, no models

Sections whose inputs do not exist yet (no sweep, no bench run) are replaced by a note that says
which command makes them. It lives in bench, the top layer, because it reads what every layer
wrote: the trainer's metadata and experiments, and the bench results.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the model registry loads TensorFlow: keep its start-up chatter out

import pandas as pd  # noqa: E402

from bench.store import find_reports
from bench.summary import markdown_summary  # noqa: E402
from trainer.artifacts import Artifacts, write_text_atomic  # noqa: E402
from trainer.config import DEFAULTS  # noqa: E402
from trainer.experiments import read_experiments  # noqa: E402
from trainer.models import get_spec, list_models  # noqa: E402
from trainer.reports import REPORT_EXPERIMENTS, REPORT_MODEL4_EVALUATE_MS, REPORT_MODEL4_PREDICT_MS, RunMetadata, table1  # noqa: E402

PROG = "fmnist-bench report"

EXPERIMENT_TABLES = (
    ("optimizer", "Table 2: Model 4, optimizers", "fmnist-train sweep model4 --grid optimizer=sgd,adam"),
    ("batch_size", "Table 3: Model 4, batch size", "fmnist-train sweep model4 --grid batch_size=16,32,64,128"),
    ("lr", "Table 4: Model 4, learning rate", "fmnist-train sweep model4 --grid lr=0.01,0.02,0.001,0.002"),
    ("epochs", "Table 5: Model 4, epochs", "fmnist-train sweep model4 --grid epochs=10,30,50,70"),
)
FLOAT = ".4f"


def _md(frame: pd.DataFrame) -> str:
    # tabulate's missingval replaces None only: NaN (a number the report does not give) becomes None first.
    return frame.astype(object).where(frame.notna(), None).to_markdown(index=False, floatfmt=FLOAT, missingval="")


def _metadata(artifacts: Artifacts) -> dict[str, RunMetadata]:
    return {name: RunMetadata.read(artifacts.metadata_file(name)) for name in list_models() if artifacts.metadata_file(name).exists()}


def data_section(metas: dict[str, RunMetadata]) -> str:
    meta = next(iter(metas.values()))
    d = meta.data
    classes = "\n".join(f"- {name}" for name in d["class_names"])
    return (f"## Data\n\nSource: `{d['source']}`, {d['images']:,} images (sha256 `{d['sha256'][:16]}…`). "
            f"Split: {d['split_protocol']}; train {d['split']['train']:,}, validation {d['split']['val']:,}, test {d['split']['test']:,}.\n\n"
            f"Classes:\n\n{classes}\n")


def table1_section(artifacts: Artifacts, metas: dict[str, RunMetadata]) -> str:
    frame = table1(artifacts, list_models())
    machine = next(iter(metas.values())).machine
    return (f"## Table 1: the six models\n\nOurs beside the report's (test accuracy and training time). "
            f"Training time on {machine['cpu']} ({machine['cores']} cores); the report's on its own machine.\n\n{_md(frame)}\n")


def experiment_section(artifacts: Artifacts, model: str = "model4") -> str:
    experiments = read_experiments(artifacts.experiments_file)
    parts = ["## Tables 2-5: Model 4 experiments\n"]
    for param, title, command in EXPERIMENT_TABLES:
        rows = experiments[(experiments["model"] == model) & experiments["sweep"].astype(str).str.contains(f"{param}=", regex=False)]
        if rows.empty:
            parts.append(f"### {title}\n\n_Not run yet._ Make it with `{command}`.\n")
            continue
        report = [REPORT_EXPERIMENTS[param].get(_key(param, row[param]), {}) if _comparable(row, param) else {}
                  for _, row in rows.iterrows()]
        shortened = not all(report)  # some rows have no study numbers beside them
        frame = pd.DataFrame({
            "Epochs": rows["epochs"], "Batch": rows["batch_size"], "Optimizer": rows["optimizer"], "LR": rows["lr"],
            "Train Accuracy": rows["train_accuracy"], "Val Accuracy": rows["val_accuracy"],
            "Train Loss": rows["train_loss"], "Val Loss": rows["val_loss"],
            "Test Accuracy": rows["test_accuracy"],
            "Report Test Accuracy": pd.to_numeric(pd.Series([r.get("test_accuracy") for r in report], index=rows.index)),
            "Training Time (min)": rows["training_time_min"],
            "Report Training Time (min)": pd.to_numeric(pd.Series([r.get("training_min") for r in report], index=rows.index)),
            "Measured as": rows["measured_as"],
        })
        frame.insert(frame.columns.get_loc("Report Test Accuracy") + 1, "Δ Test Accuracy",
                     frame["Test Accuracy"] - frame["Report Test Accuracy"])
        epochs = sorted(set(rows["epochs"]))
        caption = (f"{title}. Other settings as the report ({_protocol()}) unless the row says otherwise; "
                   f"epochs {', '.join(map(str, epochs))} (the report: 50, and 10-70 in Table 5). The report's numbers "
                   "stand only beside rows whose other settings are the report's.")
        if shortened:
            caption += f" At the study's settings: `{command}` (rows already run are skipped)."
        parts.append(f"### {title}\n\n{caption}\n\n{_md(frame)}\n")
        if shortened:  # the study's table whole, below ours
            parts.append(f"The report's own {title.split(':')[0]}, for reference (its epochs):\n\n{_report_table(param)}\n")
    return "\n".join(parts)


# The report's protocol, the training defaults (trainer/config.py): a row is set beside the report's
# numbers only when every setting it does not vary is this.
REPORT_FIXED = {"optimizer": DEFAULTS.optimizer, "batch_size": DEFAULTS.batch_size, "lr": DEFAULTS.lr, "epochs": DEFAULTS.epochs}


def _protocol() -> str:
    """``Adam, batch 128, lr 0.001``: the fixed settings as the captions name them."""
    optimizer = {"adam": "Adam", "sgd": "SGD"}.get(DEFAULTS.optimizer, DEFAULTS.optimizer)
    return f"{optimizer}, batch {DEFAULTS.batch_size}, lr {DEFAULTS.lr:g}"


def _comparable(row: pd.Series, param: str) -> bool:
    """Whether a row varies only ``param`` from the report's settings (Table 2 used each optimizer's default lr)."""
    fixed = {k: v for k, v in REPORT_FIXED.items() if k != param and not (param == "optimizer" and k == "lr")}
    return all(_key(k, row[k]) == v for k, v in fixed.items())


EXPERIMENT_HEADINGS = {"optimizer": "Optimizer", "batch_size": "Batch", "lr": "LR", "epochs": "Epochs"}


def _report_table(param: str) -> str:
    names = {"train_accuracy": "Train Accuracy", "val_accuracy": "Val Accuracy", "train_loss": "Train Loss",
             "val_loss": "Val Loss", "test_accuracy": "Test Accuracy", "training_min": "Training Time (min)"}
    frame = pd.DataFrame.from_dict(REPORT_EXPERIMENTS[param], orient="index").rename(columns=names)
    return _md(frame.rename_axis(EXPERIMENT_HEADINGS[param]).reset_index())


def _key(param: str, value):
    return {"optimizer": str, "batch_size": int, "lr": float, "epochs": int}[param](value)


def figures_section(artifacts: Artifacts, out: Path, metas: dict[str, RunMetadata]) -> str:
    lines = ["## Accuracy and loss\n", "The report's 2x2 figure per model: accuracy vs loss, and both vs epoch, training and validation.\n"]
    (out / "plots").mkdir(parents=True, exist_ok=True)
    for name in metas:
        source = artifacts.plot_file(name)
        if source.exists():
            if source.resolve() != (out / "plots" / source.name).resolve():
                shutil.copyfile(source, out / "plots" / source.name)
            lines.append(f"### {get_spec(name).display_name}\n\n![{get_spec(name).display_name}](plots/{source.name})\n")
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
            {"Model 4, Keras on 6,000 test images": "evaluate (ms)", "report": REPORT_MODEL4_EVALUATE_MS,
             "ours, first call": test["evaluate_s"] * 1000, "ours, warm median": test["evaluate_warm_median_s"] * 1000},
            {"Model 4, Keras on 6,000 test images": "predict (ms)", "report": REPORT_MODEL4_PREDICT_MS,
             "ours, first call": test["predict_s"] * 1000, "ours, warm median": test["predict_warm_median_s"] * 1000},
        ])
        machine = metas["model4"].machine
        parts.append(f"The report's %%time wall times (its machine unnamed) beside ours on {machine['cpu']} "
                     f"({machine['cores']} cores), Keras batch 32 as the report:\n\n{frame.to_markdown(index=False, floatfmt='.0f')}\n")
    reports = find_reports(artifacts.reports_dir)
    if not reports:
        parts.append("_No bench results yet._ Make them with `fmnist-export all && fmnist-bench run`.\n")
        return "\n".join(parts)
    parts.append("Every exported model on each runtime (`fmnist-bench summary` of the reports below; a case measured "
                 f"in several keeps its newest result):\n\n{markdown_summary(reports)}")
    return "\n".join(parts)


def build(artifacts: Artifacts, out: Path) -> Path:
    metas = _metadata(artifacts)
    if not metas:
        raise FileNotFoundError(f"{artifacts.root / 'models'}: no trained models to report; run: fmnist-train all")
    out.mkdir(parents=True, exist_ok=True)
    sections = [
        f"# Reproduction report\n\nGenerated by `{PROG}` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC "
        f"from `{artifacts.root}`. Base weights of the transfer models: "
        + "; ".join(f"{get_spec(n).display_name}: {m.base_weights}" for n, m in metas.items() if get_spec(n).transfer) + ".\n",
        data_section(metas),
        table1_section(artifacts, metas),
        experiment_section(artifacts),
        figures_section(artifacts, out, metas),
        best_model_section(metas),
        latency_section(artifacts, metas),
    ]
    path = out / "REPORT.md"
    write_text_atomic(path, "\n".join(sections))
    return path


def main(argv: list[str] | None = None) -> int:
    """``fmnist-bench report [--artifacts DIR] [--out DIR]``; exit status 2 with one line when nothing can be reported."""
    parser = argparse.ArgumentParser(prog=PROG, description="Write REPORT.md from the artifacts.")
    parser.add_argument("--artifacts", help="artifacts folder (default: $FMNIST_ARTIFACTS, then ./artifacts)")
    parser.add_argument("--out", help="output folder (default: the artifacts' reports/)")
    args = parser.parse_args(argv)
    artifacts = Artifacts.at(args.artifacts)
    try:
        path = build(artifacts, Path(args.out) if args.out else artifacts.reports_dir)
    except (FileNotFoundError, ValueError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0
