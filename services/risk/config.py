"""Detector configurations: one pydantic model per PyOD detector, plus an ensemble.

A configuration is plain data (JSON round-trips), so it can be stored with a fitted model,
given on the command line (``--detector iforest``) or written in a file. ``parse_detector``
accepts a name, a dict or a model and returns a validated configuration.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from services.errors import RiskError

QUADRATIC_ROW_LIMIT = 50_000
"""Default fit-size limit for KNN and LOF, whose fit cost grows with the square of the rows."""


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    contamination: float = Field(0.05, gt=0.0, le=0.5)
    """Expected share of anomalies: sets the flag threshold from the training scores."""


class ECODConfig(_Base):
    """Empirical-CDF outlier detection (parameter-free; per-feature tail probabilities)."""

    kind: Literal["ecod"] = "ecod"


class COPODConfig(_Base):
    """Copula-based outlier detection (parameter-free; empirical copula tails)."""

    kind: Literal["copod"] = "copod"


class IForestConfig(_Base):
    kind: Literal["iforest"] = "iforest"
    n_estimators: int = Field(100, ge=1)
    max_samples: int | float | Literal["auto"] = "auto"
    max_features: float = Field(1.0, gt=0.0, le=1.0)
    random_state: int = 0


class HBOSConfig(_Base):
    kind: Literal["hbos"] = "hbos"
    n_bins: int = Field(10, ge=2)
    alpha: float = Field(0.1, gt=0.0, lt=1.0)
    tol: float = Field(0.5, gt=0.0, lt=1.0)


class _Quadratic(_Base):
    max_rows: int = Field(QUADRATIC_ROW_LIMIT, ge=10)
    """Fit on at most this many rows."""
    on_large: Literal["sample", "refuse"] = "sample"
    """Above ``max_rows``: fit on a seeded sample of ``max_rows`` rows (and say so) or refuse."""
    random_state: int = 0


class KNNConfig(_Quadratic):
    kind: Literal["knn"] = "knn"
    n_neighbors: int = Field(5, ge=1)
    method: Literal["largest", "mean", "median"] = "largest"


class LOFConfig(_Quadratic):
    kind: Literal["lof"] = "lof"
    n_neighbors: int = Field(20, ge=1)


class PCAConfig(_Base):
    kind: Literal["pca"] = "pca"
    n_components: int | float | None = None
    whiten: bool = False
    standardization: bool = True
    random_state: int = 0


SingleConfig = Annotated[
    ECODConfig | COPODConfig | IForestConfig | HBOSConfig | KNNConfig | LOFConfig | PCAConfig,
    Field(discriminator="kind"),
]


class EnsembleConfig(_Base):
    """Several detectors combined into one score.

    ``combine="rank"`` averages each member's percentile among its own training scores;
    ``combine="zscore"`` averages each member's score standardised by the mean and standard
    deviation of its training scores. Both are fixed functions of a row once fitted.
    """

    kind: Literal["ensemble"] = "ensemble"
    members: tuple[SingleConfig, ...] = Field(min_length=2)
    combine: Literal["rank", "zscore"] = "zscore"


DetectorConfig = Annotated[
    ECODConfig | COPODConfig | IForestConfig | HBOSConfig | KNNConfig | LOFConfig | PCAConfig
    | EnsembleConfig,
    Field(discriminator="kind"),
]
_ADAPTER: TypeAdapter[Any] = TypeAdapter(DetectorConfig)

SINGLE_KINDS = ("ecod", "copod", "iforest", "hbos", "knn", "lof", "pca")


def default_ensemble() -> EnsembleConfig:
    """The default detector: z-score average of IForest, KNN and PCA.

    Chosen on the ADBench measurements in docs/quality.md: IForest and PCA have the two best
    single averages, KNN is the strongest where both fail (local anomalies); together their
    average ROC-AUC is above the best single detector's (the issue's target)."""
    return EnsembleConfig(members=(IForestConfig(), KNNConfig(), PCAConfig()), combine="zscore")


def parse_detector(spec: str | dict[str, Any] | BaseModel | None) -> Any:
    """A validated detector configuration from a name (``"iforest"``, ``"default"``,
    ``"ensemble"``), a JSON object string, a dict, or a configuration model."""
    if spec is None or spec in ("default", "ensemble"):
        return default_ensemble()
    if isinstance(spec, BaseModel):
        spec = spec.model_dump()
    if isinstance(spec, str):
        text = spec.strip()
        if text.startswith("{"):
            try:
                spec = json.loads(text)
            except json.JSONDecodeError as exc:
                raise RiskError(f"detector specification is not valid JSON: {exc}") from None
        else:
            name = text.lower()
            if name not in SINGLE_KINDS:
                raise RiskError(f"unknown detector {text!r}; expected one of "
                                f"{', '.join(SINGLE_KINDS)}, ensemble or default")
            spec = {"kind": name}
    try:
        return _ADAPTER.validate_python(spec)
    except ValidationError as exc:
        raise RiskError(f"invalid detector configuration {spec!r}: {exc}") from None


def config_json(config: BaseModel) -> str:
    """Canonical JSON of a configuration (sorted keys), used in model ids and metadata."""
    return json.dumps(config.model_dump(mode="json"), sort_keys=True)
