"""PNG plots (matplotlib, Agg): predicted vs measured with y=x and ±10% bands; learning curve."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from moenas.arch.files import check_replaceable

MARK = "moenas plot"  # in each PNG's Software field: how a later run knows the file is its own
HOLDOUT_PLOTS = ("holdout_predicted_vs_measured.png", "learning_curve.png")  # `moenas evaluate --plots DIR`


def is_plot(path: Path) -> bool:
    """Whether ``path`` is a PNG this module wrote (its text chunks precede the image data)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    return head.startswith(b"\x89PNG") and MARK.encode() in head


def check_plots_replaceable(d: str | Path, names: Sequence[str] = HOLDOUT_PLOTS) -> None:
    """UserError before any work when a plot's name in ``d`` is taken by a file moenas did not write."""
    for name in names:
        check_replaceable(Path(d) / name, is_plot, "a plot moenas wrote")


def _save(plt, fig, path: str | Path) -> Path:
    fig.savefig(path, metadata={"Software": MARK})
    plt.close(fig)
    return Path(path)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def predicted_vs_measured(y, pred, path: str | Path, title: str = "", lower=None, upper=None) -> Path:
    plt = _plt()
    y, pred = np.asarray(y, float), np.asarray(pred, float)
    lo, hi = float(min(y.min(), pred.min())) * 0.9, float(max(y.max(), pred.max())) * 1.1
    xs = np.linspace(lo, hi, 100)
    fig, ax = plt.subplots(figsize=(5, 5), dpi=110)
    ax.fill_between(xs, xs * 0.9, xs * 1.1, color="tab:green", alpha=0.15, label="±10%")
    ax.plot(xs, xs, "k-", lw=1, label="y = x")
    if lower is not None and upper is not None:
        ax.errorbar(
            y,
            pred,
            yerr=[pred - np.asarray(lower), np.asarray(upper) - pred],
            fmt="none",
            ecolor="tab:blue",
            alpha=0.25,
            lw=0.8,
        )
    ax.scatter(y, pred, s=10, color="tab:blue", label="archs")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("measured latency (ms)")
    ax.set_ylabel("predicted latency (ms)")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return _save(plt, fig, path)


def plot_learning_curve(
    curve: Sequence[dict[str, Any]], path: str | Path, title: str = "", noise_floor: float | None = None
) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 4), dpi=110)
    n = [r["n_train"] for r in curve]
    ax.plot(n, [r["mape"] for r in curve], "o-", label="holdout MAPE")
    if noise_floor:
        ax.axhline(noise_floor, color="gray", ls="--", label=f"noise floor {noise_floor:.2f}%")
    ax.set_xscale("log")
    ax.set_xlabel("training archs")
    ax.set_ylabel("MAPE (%)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(plt, fig, path)
