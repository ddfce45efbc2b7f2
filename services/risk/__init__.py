"""Risk analysis: PyOD anomaly scores on stored vectors or attributes, written back, explained.

Public API (what the facade and the CLI call)::

    score_table(store, table, detector=None, *, column=None, attributes=None,
                fit_sample=None, seed=0, threshold=None, batch_size=65_536) -> RiskRun
    rescore(store, table, model_id=None, *, threshold=None) -> RiskRun
    score_new(store, table, rows, model_id=None) -> pa.Table
    top(store, table, n=20, *, columns=None, flagged_only=False) -> pa.Table
    explain(store, table, customer, *, model_id=None, n_features=5, n_neighbours=5)
        -> RiskExplanation
    evaluate(store, table, label, detectors=(...), *, positive=None, column=None,
             attributes=None, fit_sample=None, seed=0) -> list[DetectorEvaluation]
    load_model(store, table, model_id=None) -> (RiskDetector, FeatureSource, metadata)
    choose_column(info) -> (column, reason)

Without a column or attributes, risk scores the vector column that keeps magnitudes
(``vec_tabular_raw``, see :func:`choose_column`). ``risk_score`` is a robust z-score of the
detector's score against the fitted rows' (:meth:`RiskDetector.risk_score`), and no
non-finite score is ever written.
"""

from .config import (
    COPODConfig,
    ECODConfig,
    EnsembleConfig,
    HBOSConfig,
    IForestConfig,
    KNNConfig,
    LOFConfig,
    PCAConfig,
    default_ensemble,
    parse_detector,
)
from .detector import RiskDetector
from .errors import InvalidRiskInput, ModelIntegrityError, ModelNotFound, RiskError, TooManyRows
from .evaluate import DetectorEvaluation, evaluate, evaluation_table, label_metrics
from .explain import RiskExplanation, explain
from .features import FeatureSource, choose_column
from .persistence import load_model, save_model
from .scoring import RiskRun, fit, rescore, score_new, score_stream, score_table, top, write_scores

__all__ = [
    "COPODConfig", "DetectorEvaluation", "ECODConfig", "EnsembleConfig", "FeatureSource",
    "HBOSConfig", "IForestConfig", "InvalidRiskInput", "KNNConfig", "LOFConfig",
    "ModelIntegrityError", "ModelNotFound", "PCAConfig", "RiskDetector", "RiskError",
    "RiskExplanation", "RiskRun", "TooManyRows", "choose_column", "default_ensemble", "evaluate",
    "evaluation_table", "explain", "fit", "label_metrics", "load_model", "parse_detector",
    "rescore", "save_model", "score_new", "score_stream", "score_table", "top", "write_scores",
]
