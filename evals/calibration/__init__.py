"""`facellm-eval calibrate`: how well the per-attribute confidences of POST /v1/faces/analyze
match accuracy on labelled faces (FairFace's CSV layout): accuracy, ECE, reliability diagrams.

Modules: `fairface` (labels CSV), `records` (server answers, records file), `metrics` (pure
scores), `plot` (matplotlib, optional), `report` (JSON and markdown), `run` (the HTTP run).
"""

from evals.calibration.run import (
    CalibrateConfig,
    CalibrationRun,
    run_calibrate,
    run_calibrate_async,
)

__all__ = ["CalibrateConfig", "CalibrationRun", "run_calibrate", "run_calibrate_async"]
