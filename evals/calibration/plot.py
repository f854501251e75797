"""Reliability diagrams (PNG). matplotlib is optional (`pip install 'facellm-serve[eval]'`), so it
is imported only here, and `require_matplotlib` lets a run fail before it asks the server."""

from __future__ import annotations

from pathlib import Path

from evals.calibration.metrics import Calibration
from evals.client import EvalError

INSTALL_HINT = (
    "facellm-eval calibrate draws reliability diagrams with matplotlib, which is not installed; "
    "install the `eval` extra: pip install 'facellm-serve[eval]' (or pip install 'matplotlib>=3.8')"
)


def require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise EvalError(INSTALL_HINT) from exc


def diagram_name(attribute: str) -> str:
    return f"reliability-{attribute}.png"


def reliability_diagram(scores: Calibration, path: Path) -> None:
    """Accuracy per confidence bin against the diagonal (perfect calibration), bin counts below."""
    require_matplotlib()
    # The object API with the Agg canvas: no pyplot global state, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5, 6), layout="constrained")
    FigureCanvasAgg(figure)
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    width = 1.0 / len(scores.bins)
    lefts = [b.lower for b in scores.bins]
    top.bar(
        lefts,
        [b.accuracy or 0.0 for b in scores.bins],
        width=width,
        align="edge",
        edgecolor="black",
        label="accuracy",
    )
    # The gap from each bin's accuracy to its mean confidence: what ECE weighs and sums.
    filled = [b for b in scores.bins if b.count]
    top.bar(
        [b.lower for b in filled],
        [(b.mean_confidence or 0.0) - (b.accuracy or 0.0) for b in filled],
        bottom=[b.accuracy or 0.0 for b in filled],
        width=width,
        align="edge",
        color="tab:red",
        alpha=0.3,
        hatch="//",
        edgecolor="tab:red",
        label="gap to mean confidence",
    )
    top.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    top.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy")
    top.set_title(
        f"{scores.attribute}: ECE {scores.ece:.3f}, accuracy {scores.accuracy:.3f}, "
        f"n={scores.count}",
        fontsize="medium",
    )
    top.legend(loc="best", fontsize="small")
    bottom.bar(lefts, [b.count for b in scores.bins], width=width, align="edge", color="gray")
    bottom.set(xlabel="confidence of the returned value", ylabel="answers")
    figure.savefig(path, format="png", dpi=100)
