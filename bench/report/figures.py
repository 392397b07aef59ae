"""REPORT.md's "At a glance" figures, drawn from the bench results and the trainer's metadata: accuracy against
speed and size with the Pareto front, one model's single-stream latency per runtime, its server latency
against offered rate (MLPerf LoadGen's Server scenario) and a confusion matrix beside per-class scores.

The data come in as plain values (:func:`tradeoff_points`, :func:`latency_series`, :func:`server_series` read
the records), so each figure can be drawn, and each rule tested, without a bench run. matplotlib runs headless.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: CI and servers have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import PowerNorm  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogFormatter  # noqa: E402

from bench.results.record import BenchRecord  # noqa: E402
from bench.results.summary import runtime_name  # noqa: E402
from bench.runtimes import ROWS  # noqa: E402
from trainer.artifacts import atomic_path  # noqa: E402

DPI = 100
# bxp's "orientation" arrived in matplotlib 3.10 and "vert" is deprecated from 3.11; pyproject allows 3.8.
HORIZONTAL = {"orientation": "horizontal"} if tuple(int(x) for x in matplotlib.__version__.split(".")[:2]) >= (3, 10) else {"vert": False}
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "<", ">")
_ROW_ORDER = {row: i for i, row in enumerate(ROWS)}
Records = Mapping[str, tuple[BenchRecord, dict]]


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points (time, accuracy) that no other point dominates, fastest first.

    A point is dominated when another is at least as fast and at least as accurate, and strictly better
    in one of the two: what is left is the set of rows worth choosing from, whatever the weight put on
    speed against accuracy. Equal points are all kept. Points with a NaN are never on the front.
    """
    usable = [i for i, (t, a) in enumerate(points) if not (math.isnan(t) or math.isnan(a))]
    front = [i for i in usable if not any(
        points[j][0] <= points[i][0] and points[j][1] >= points[i][1] and points[j] != points[i] for j in usable)]
    return sorted(front, key=lambda i: (points[i][0], -points[i][1], i))


@dataclass(frozen=True)
class Point:
    """One model x variant x runtime at one predict batch size."""

    model: str
    provider: str
    variant: str
    runtime: str  # readable: "onnxruntime CPU int8"
    ms_per_image: float
    images_per_s: float
    accuracy: float
    megabytes: float | None


def report_batch(records: Records, preferred: int = 128) -> int | None:
    """The predict batch size the figure uses: ``preferred`` where measured, else the most measured one."""
    batches = [r.batch_size for r, _ in records.values() if r.operation == "predict" and not r.skipped and r.median_s]
    if not batches:
        return None
    return preferred if preferred in batches else max(set(batches), key=lambda b: (batches.count(b), -b))


def tradeoff_points(records: Records, batch_size: int) -> tuple[list[Point], list[str]]:
    """The measured predict rows at ``batch_size`` with an accuracy; and the ids of those without one."""
    points, unmeasured = [], []
    for record, _ in records.values():
        if record.skipped or record.operation != "predict" or record.batch_size != batch_size or not record.median_s:
            continue
        accuracy = (record.quality or {}).get("accuracy")
        if accuracy is None or not record.images:
            unmeasured.append(record.id)
            continue
        ms = record.median_s * 1000 / record.images
        points.append(Point(record.model, record.provider, record.variant, runtime_name(record.provider, record.variant, record),
                            ms, 1000 / ms, float(accuracy), record.model_bytes / 1e6 if record.model_bytes else None))
    return sorted(points, key=lambda p: (p.model, runtime_order(p.provider, p.variant))), unmeasured


@dataclass(frozen=True)
class LatencySeries:
    """One runtime's single-stream latency: every query's time (ms) where the report kept them."""

    provider: str
    variant: str
    runtime: str
    times_ms: tuple[float, ...] | None  # None: a schema-1 report (p50/p99 only)
    p50: float
    p99: float


def latency_series(records: Records, model: str) -> list[LatencySeries]:
    """The model's measured single-stream rows, fastest (p50) first."""
    series = []
    for record, _ in records.values():
        if record.model != model or record.operation != "single-stream" or record.skipped:
            continue
        times = tuple(t * 1000 for t in record.times_s) if record.times_s else None
        latency = record.latency_ms or {}
        p50 = latency.get("p50", float(np.percentile(times, 50)) if times else None)
        p99 = latency.get("p99", float(np.percentile(times, 99)) if times else None)
        if p50 is not None and p99 is not None:
            series.append(LatencySeries(record.provider, record.variant, runtime_name(record.provider, record.variant, record),
                                        times, float(p50), float(p99)))
    return sorted(series, key=lambda s: s.p50)


@dataclass(frozen=True)
class ServerCurve:
    """One runtime's server search: each offered rate LoadGen ran, with its p50 and p99 and LoadGen's verdict."""

    provider: str
    variant: str
    runtime: str
    latency_bound_ms: float
    rates_qps: tuple[float, ...]  # offered, ascending
    p50_ms: tuple[float, ...]
    p99_ms: tuple[float, ...]
    valid: tuple[bool, ...]
    max_qps: float | None  # the highest VALID rate; None: no rate met the bound
    verdict: str = ""  # the search's own line: the rate, or why there is none (LoadGen's reasons)


def server_series(records: Records, model: str) -> list[ServerCurve]:
    """The model's measured server searches, highest max rate first (none last)."""
    curves = []
    for record, _ in records.values():
        if record.model != model or record.operation != "server" or record.skipped or not record.server:
            continue
        found = record.server
        trials = sorted((t for t in found["trials"] if t["p50_ms"] and t["p99_ms"]), key=lambda t: t["target_qps"])
        if trials:
            rates, p50, p99 = (tuple(t[key] for t in trials) for key in ("target_qps", "p50_ms", "p99_ms"))
            curves.append(ServerCurve(record.provider, record.variant, runtime_name(record.provider, record.variant, record),
                                      float(found["latency_bound_ms"]), rates, p50, p99, tuple(bool(t["valid"]) for t in trials),
                                      found["max_qps"], found.get("verdict") or ""))
    return sorted(curves, key=lambda c: (c.max_qps is None, -(c.max_qps or 0), runtime_order(c.provider, c.variant)))


def runtime_order(provider: str, variant: str) -> int:
    """A row's place in the summary table's order; unknown rows last."""
    return _ROW_ORDER.get((provider, variant), len(ROWS))


def _colours(keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], tuple]:
    """A colour per (provider, variant), the same one in every figure: by the summary table's order."""
    palette = plt.get_cmap("tab20").colors
    order = list(ROWS) + sorted(k for k in set(keys) if k not in _ROW_ORDER)
    # tab20 pairs a dark and a light tone: even indices first keeps neighbouring runtimes apart.
    tones = [*palette[0::2], *palette[1::2]]
    return {key: tones[order.index(key) % len(tones)] for key in set(keys)}


def _key(label: str, **style) -> Line2D:
    """A legend entry with no line unless ``style`` draws one."""
    return Line2D([], [], **{"linestyle": "", "label": label, **style})


def tradeoff_figure(points: Sequence[Point], target: Path, batch_size: int, names: Mapping[str, str] | None = None) -> list[int]:
    """Accuracy against time per image (left) and against model size (right); returns the front's indices."""
    names = dict(names or {})
    front = pareto_front([(p.ms_per_image, p.accuracy) for p in points])
    colours = _colours([(p.provider, p.variant) for p in points])
    models = list(dict.fromkeys(p.model for p in points))
    marker = {m: MARKERS[i % len(MARKERS)] for i, m in enumerate(models)}

    fig, (speed, size) = plt.subplots(1, 2, figsize=(14, 6.2), gridspec_kw={"width_ratios": [1.6, 1]})
    for p in points:
        style = dict(color=colours[(p.provider, p.variant)], marker=marker[p.model], s=70, edgecolors="black", linewidths=0.4, zorder=3)
        speed.scatter(p.ms_per_image, 100 * p.accuracy, **style)
        if p.megabytes:
            size.scatter(p.megabytes, 100 * p.accuracy, **style)

    if front:
        xs = [points[i].ms_per_image for i in front]
        ys = [100 * points[i].accuracy for i in front]
        # The staircase: from each front point, nothing to its right is better until the next step up.
        speed.step(xs, ys, where="post", color="0.35", linewidth=1.2, linestyle="--", zorder=2)
        speed.scatter(xs, ys, s=190, facecolors="none", edgecolors="black", linewidths=1.4, zorder=4)
        for n, i in enumerate(front, start=1):  # numbers on the plot, names in the list below it
            p = points[i]
            speed.annotate(str(n), (p.ms_per_image, 100 * p.accuracy), xytext=(7, 7 if n % 2 else -13), textcoords="offset points",
                           fontsize=8, fontweight="bold", zorder=5,
                           bbox=dict(boxstyle="round,pad=0.15", facecolor="white", edgecolor="0.6", alpha=0.9))

    for ax, xlabel, title in ((speed, f"Predict time per image (ms, batch {batch_size}; log scale; left is faster)",
                               "Accuracy vs speed; circled and joined: the Pareto front"),
                              (size, "Model file size (MB, log scale)", "Accuracy vs size")):
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("Test accuracy (%)")
        ax.set_title(title)
        ax.grid(True, which="major", alpha=0.3)
        ax.grid(True, which="minor", axis="x", alpha=0.1)
        _pad_y(ax, [100 * p.accuracy for p in points])
    top = speed.secondary_xaxis("top", functions=(_per_second, _per_second))
    top.set_xlabel("Images per second")

    # One legend (colour: runtime, then shape: model): a second one outside the axes would be cropped.
    by_key = {(p.provider, p.variant): p.runtime for p in points}
    handles = [_key(by_key[k], marker="o", markersize=8, markerfacecolor=colours[k], markeredgecolor="black", markeredgewidth=0.4)
               for k in sorted(colours, key=lambda k: (runtime_order(*k), k))]
    if len(models) > 1:
        handles += [_key(""), _key("Model (shape)")]
        handles += [_key(names.get(m, m), marker=marker[m], markersize=8, color="0.4") for m in models]
    size.legend(handles=handles, title="Runtime (colour)", loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8,
                title_fontsize=9, frameon=False, alignment="left")
    for axis in (speed.xaxis, size.xaxis, top.xaxis):
        _plain_log_ticks(axis)
    fig.tight_layout()
    if front:  # below both panels, after the layout: the layout does not make room for it between them
        listing = [_key(f"{n}  {names.get(points[i].model, points[i].model)} · {points[i].runtime}: "
                        f"{format_ms(points[i].ms_per_image)}/image, {100 * points[i].accuracy:.2f}%")
                   for n, i in enumerate(front, start=1)]
        fig.legend(handles=listing, title="Pareto front, fastest first (no other point is better on one axis and no worse on the other)",
                   loc="upper left", bbox_to_anchor=(0.01, 0.0), ncol=2 if len(front) > 4 else 1, fontsize=8, title_fontsize=9,
                   handlelength=0, handletextpad=0, frameon=False, alignment="left")
    _save(fig, target)
    return front


class _PlainLog(LogFormatter):
    """matplotlib's choice of which log ticks to label (fewer minor ones the more decades shown), as 0.2, 3, 4,000."""

    def __call__(self, x, pos=None):
        if not super().__call__(x, pos):
            return ""
        return f"{x:,.0f}" if x >= 1000 else f"{x:g}"


def _plain_log_ticks(axis) -> None:
    axis.set_major_formatter(_PlainLog())
    axis.set_minor_formatter(_PlainLog(labelOnlyBase=False, minor_thresholds=(2.5, 1.0)))


def _log_if_wide(ax: plt.Axes, which: str, values: Sequence[float], span: float) -> bool:
    """A log scale on the ``which`` ("x" or "y") axis, with plain tick labels, where the values span over ``span`` times."""
    if max(values) / max(min(values), 1e-9) <= span:
        return False
    getattr(ax, f"set_{which}scale")("log")
    _plain_log_ticks(getattr(ax, f"{which}axis"))
    return True


def _per_second(ms: np.ndarray) -> np.ndarray:
    ms = np.asarray(ms, dtype=float)
    return np.divide(1000.0, ms, out=np.full_like(ms, np.inf), where=ms > 0)


def _pad_y(ax: plt.Axes, values: Sequence[float]) -> None:
    if values:
        low, high = min(values), max(values)
        pad = max(0.5, 0.08 * (high - low))
        ax.set_ylim(low - pad, min(100.0 + pad / 4, high + pad))


def latency_figure(series: Sequence[LatencySeries], target: Path, title: str) -> None:
    """One row per runtime, fastest median on top: a box from p25 to p75 of the query times, a whisker from
    p1 to p99, the median (p50) and p99 marked and written beside the runtime's name."""
    colours = _colours([(s.provider, s.variant) for s in series])
    fig, ax = plt.subplots(figsize=(11, 1.3 + 0.6 * max(len(series), 2)))
    rows = list(range(len(series)))[::-1]  # fastest on top
    for row, s in zip(rows, series):
        if s.times_ms:
            p1, p25, p75 = np.percentile(s.times_ms, [1, 25, 75])
            # The whisker ends at the percentiles themselves (matplotlib's own would stop at the furthest query inside them).
            ax.bxp([{"med": s.p50, "q1": p25, "q3": p75, "whislo": p1, "whishi": s.p99, "fliers": []}], positions=[row],
                   **HORIZONTAL, widths=0.55, patch_artist=True, showfliers=False,
                   boxprops=dict(facecolor=colours[(s.provider, s.variant)], alpha=0.75),
                   medianprops=dict(color="black", linewidth=1.6))
        else:  # p50 and p99 only: a thin line between them
            ax.plot([s.p50, s.p99], [row, row], color=colours[(s.provider, s.variant)], linewidth=2, zorder=2)
        ax.scatter([s.p50], [row], marker="|", s=250, color="black", zorder=4)
        ax.scatter([s.p99], [row], marker="D", s=30, color="crimson", zorder=4)
    values = [v for s in series for v in (s.times_ms or (s.p50, s.p99))]
    scale = "log scale" if _log_if_wide(ax, "x", values, 20) else "linear scale"
    labels = [f"{s.runtime}\np50 {format_ms(s.p50)} · p99 {format_ms(s.p99)}"
              + (f" · {len(s.times_ms):,} queries" if s.times_ms else " (no per-query times)") for s in series]
    ax.set_yticks(rows, labels, fontsize=8)
    ax.set_ylim(-0.7, len(series) - 0.3)
    ax.set_xlabel(f"Single-stream latency per query (ms, batch 1, {scale}; left is faster)")
    ax.set_title(title)
    ax.grid(True, axis="x", which="both", alpha=0.25)
    fig.tight_layout()
    fig.legend(handles=[_key("p50 (median)", color="black", marker="|", markersize=12),
                        _key("p99", color="crimson", marker="D", markersize=5),
                        _key("box: p25-p75; whisker: p1-p99", color="0.5", linewidth=6, alpha=0.6, linestyle="-")],
               loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3, fontsize=8, frameon=False)
    _save(fig, target)


def server_figure(curves: Sequence[ServerCurve], target: Path, title: str) -> None:
    """Latency against offered rate, one colour per runtime: p99 solid, p50 dashed, each rate LoadGen ran a point
    (filled: VALID, hollow: INVALID), the latency bound a horizontal line and each runtime's max rate under it a
    star on its p99. Each axis logarithmic where its values span more than a decade: a knee is read at a glance."""
    colours = _colours([(c.provider, c.variant) for c in curves])
    fig, ax = plt.subplots(figsize=(11, 6.2))
    for curve in curves:
        colour = colours[(curve.provider, curve.variant)]
        label = f"{curve.runtime}: " + (f"max {curve.max_qps:,.0f} q/s" if curve.max_qps is not None else "no rate meets the bound")
        ax.plot(curve.rates_qps, curve.p99_ms, color=colour, linewidth=1.8, label=label, zorder=3)
        ax.plot(curve.rates_qps, curve.p50_ms, color=colour, linewidth=1.2, linestyle="--", zorder=3)
        for rate, p50, p99, valid in zip(curve.rates_qps, curve.p50_ms, curve.p99_ms, curve.valid):
            face = colour if valid else "white"
            ax.scatter([rate, rate], [p99, p50], s=[34, 18], facecolors=face, edgecolors=colour, linewidths=1.2, zorder=4)
        if curve.max_qps in curve.rates_qps:
            ax.scatter([curve.max_qps], [curve.p99_ms[curve.rates_qps.index(curve.max_qps)]], marker="*", s=220, color=colour,
                       edgecolors="black", linewidths=0.6, zorder=5)
    bounds = sorted({c.latency_bound_ms for c in curves})
    for bound in bounds:
        ax.axhline(bound, color="crimson", linewidth=1.2, linestyle=":", zorder=2)
        ax.annotate(f"bound: p99 ≤ {bound:g} ms", (0.005, bound), xycoords=("axes fraction", "data"), xytext=(0, 4),
                    textcoords="offset points", color="crimson", fontsize=8)
    _log_if_wide(ax, "x", [r for c in curves for r in c.rates_qps], 10)
    _log_if_wide(ax, "y", [v for c in curves for v in (*c.p50_ms, *c.p99_ms)] + bounds, 10)
    ax.set_xlabel("Offered rate (queries/s, Poisson arrivals; one image per query)")
    ax.set_ylabel("Latency per query (ms, LoadGen's: scheduled issue to completion)")
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    handles, _ = ax.get_legend_handles_labels()
    handles += [_key("p99", color="0.3", linewidth=1.8, linestyle="-"), _key("p50", color="0.3", linewidth=1.2, linestyle="--"),
                _key("LoadGen: VALID", color="0.3", marker="o"),
                _key("INVALID", color="0.3", marker="o", markerfacecolor="white"),
                _key("max rate under the bound", color="0.3", marker="*", markersize=12)]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    _save(fig, target)


def format_ms(value: float) -> str:
    return f"{value:.3g} ms" if value < 100 else f"{value:,.0f} ms"


def confusion_figure(matrix: Sequence[Sequence[int]], class_names: Sequence[str], per_class: Sequence[Mapping[str, float]],
                     target: Path, title: str) -> None:
    """The confusion matrix (counts; colour: share of the true class) beside per-class precision, recall, F1.

    ``per_class``: one mapping per class, in the matrix's order, with precision, recall and f1-score (or f1)
    as fractions: scikit-learn's classification report (the trainer's) or the bench's quality."""
    counts = np.asarray(matrix, dtype=float)
    n = counts.shape[0]
    names = list(class_names)[:n] + [f"Class {i + 1}" for i in range(len(class_names), n)]
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    fig, (heat, dots) = plt.subplots(1, 2, figsize=(14, 1.8 + 0.95 * n), gridspec_kw={"width_ratios": [1.25, 1]})
    # A square-root scale: a 5% confusion is visible beside a 95% diagonal.
    image = heat.imshow(share, cmap="Blues", norm=PowerNorm(gamma=0.5, vmin=0, vmax=1))
    for i in range(n):
        for j in range(n):
            heat.text(j, i, f"{int(counts[i, j]):,}", ha="center", va="center", fontsize=9,
                      color="white" if share[i, j] > 0.45 else "black")
    short = [_wrap(name) for name in names]
    heat.set_xticks(range(n), short, fontsize=8)
    heat.set_yticks(range(n), short, fontsize=8)
    heat.set_xlabel("Predicted class")
    heat.set_ylabel("True class")
    heat.set_title("Confusion matrix (counts; colour: share of the true class)")
    bar = fig.colorbar(image, ax=heat, fraction=0.046, pad=0.04, label="Share of the true class (square-root scale)")
    bar.set_ticks([0, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 1])
    bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0%}"))

    metrics = (("precision", "Precision", "o", "C0"), ("recall", "Recall", "s", "C1"), ("f1-score", "F1", "D", "C2"))
    ys = np.arange(n)[::-1]
    values = []
    for k, (key, label, mark, colour) in enumerate(metrics):
        xs = [100 * _score(per_class[i] if i < len(per_class) else {}, key) for i in range(n)]
        values += [x for x in xs if not math.isnan(x)]
        dots.scatter(xs, ys + (k - 1) * 0.18, marker=mark, color=colour, s=40, label=label, zorder=3)
    dots.set_yticks(ys, short, fontsize=8)
    dots.set_ylim(-0.6, n - 0.4)
    if values:
        low = min(values)
        left = max(0.0, low - max(1.0, 0.1 * (100 - low)))
        dots.set_xlim(left, 100 + 0.04 * (100 - left))  # room for a marker at 100%, no scale past it
    dots.set_xlabel("Score on the test split (%)")
    dots.set_title("Per-class precision, recall and F1")
    dots.grid(True, axis="x", alpha=0.3)
    dots.legend(loc="lower left", fontsize=8, ncol=3)
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, target)


def _score(entry: Mapping[str, float], key: str) -> float:
    value = entry.get(key, entry.get("f1")) if key == "f1-score" else entry.get(key)
    return float("nan") if value is None else float(value)


def _wrap(name: str) -> str:
    """'Class 1 (T-shirt/top + Trouser)' -> 'Class 1\\n(T-shirt/top\\n+ Trouser)': axis labels that fit."""
    head, _, rest = name.partition(" (")
    return f"{head}\n({rest.replace(' + ', chr(10) + '+ ')}" if rest else name


def _save(fig: plt.Figure, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        fig.savefig(tmp, dpi=DPI, format="png", bbox_inches="tight")  # legends outside the axes stay in
    plt.close(fig)
