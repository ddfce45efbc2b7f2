"""The facade's vector-column steps: embed (tabular, text, behavior, combined) and index
(the bodies behind :meth:`Kindred.embed` and :meth:`Kindred.index`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ingest.datamodel import PRODUCTS
from vectorstore import VectorStore

from ..admin import Progress
from ..errors import ServiceError
from ..models import StepResult
from ._common import _for_step, _plain, named, named_one, require_table


def embed(store: VectorStore, runner: Any, kind: str, *, table: str,
          include: Sequence[str] | None = None, exclude: Sequence[str] = (),
          column: str | None = None, template: str | None = None, model: str | None = None,
          output: str | None = None, dim: int | None = None, sources: Sequence[str] = (),
          weights: Sequence[float] | None = None, backend: str = "torch", raw: bool = True,
          types: Sequence[str] | dict[str, str] = (),
          progress: Progress | None = None) -> StepResult:
    """:meth:`services.facade.Kindred.embed`."""
    from ingest import embedders

    require_table(store, table, "ingest it first")
    include, exclude = named(store, table, include), named(store, table, exclude) or ()
    column = named_one(store, table, column) if column else column
    step = f"embed {kind}"
    rows_done = _for_step(progress, step)
    if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 1):
        raise ServiceError(f"dim must be a positive integer, got {dim!r}")
    if kind == "tabular":
        from ingest.column_kinds import parse_kinds
        from ingest.embedders.tabular import embed_tabular

        try:
            kinds = parse_kinds(types)
        except ValueError as exc:
            raise ServiceError(str(exc)) from None
        r, companion = embed_tabular(store, table,
                                     include=list(include) if include else None,
                                     exclude=list(exclude), pca=dim, column=output,
                                     raw=raw, types=kinds, progress=rows_done,
                                     runner=runner)
        if companion is not None:
            return StepResult(step=f"embed {kind}", table=table, details={
                **_plain(r), "raw_column": companion.column,
                "message": f"{r.message}; {companion.message} (magnitude-preserving, "
                           "for risk scoring)"})
    elif kind == "text":
        if (column is None) == (template is None):
            raise ServiceError("text embedding needs exactly one of a text column "
                               "(--text-column, text_column=) or a profile template "
                               "(--template)")
        emb = embedders.TextEmbedder(column=column, template=template, model=model,
                                     backend=backend)
        r = embedders.embed(store, table, emb, output, progress=rows_done,
                            runner=runner)
    elif kind == "behavior":
        from ingest.embedders.behavior import BehaviorEmbedder
        from ingest.embedders.behavior_run import embed_behavior

        emb = _exact_dim(BehaviorEmbedder, dim, "items")(**({"dim": dim} if dim else {}))
        r = embed_behavior(store, emb, customers=table,
                           products=PRODUCTS if store.has_table(PRODUCTS) else None,
                           column=output or "vec_behavior", progress=rows_done,
                           runner=runner)
    elif kind == "combined":
        from ingest.embedders.combined import embed_combined

        if not sources:
            raise ServiceError("combined embedding needs the source vector columns "
                               "(--source vec_tabular --source vec_text ...)")
        if weights is not None and len(weights) != len(sources):
            raise ServiceError(f"give one weight per source column: {len(sources)} "
                               f"sources, {len(weights)} weights")
        w = dict(zip(sources, weights or [1.0] * len(sources), strict=True))
        r = embed_combined(store, table, w, column=output or "vec_combined",
                           progress=rows_done, runner=runner)
    else:
        raise ServiceError(f"unknown embedding kind {kind!r}; expected tabular, text, "
                           "behavior or combined")
    return StepResult(step=f"embed {kind}", table=table, details={
        **_plain(r), "message": getattr(r, "message", "")})


def index(store: VectorStore, runner: Any, table: str, *,
          columns: Sequence[str] | None = None, min_rows: int = 5_000,
          index_type: str | None = None, progress: Progress | None = None) -> StepResult:
    """:meth:`services.facade.Kindred.index`."""
    info = store.table_info(table)
    n = store.count(table)
    wanted = list(columns) if columns else list(info.vectors)
    for c in wanted:
        info.vector(c)
    built, skipped = [], []
    steps = len(wanted) + 1
    scores = [c for c in info.schema.names if c.startswith("propensity_")]
    from ingest.runner.indexes import create_scalar_index, create_vector_index

    if info.key and store.capabilities.scalar_index:
        create_scalar_index(store, table, info.key, runner=runner)
        for c in scores:  # match --method propensity filters on them
            create_scalar_index(store, table, c, runner=runner)
    if progress:
        progress(f"index {table}", 1, steps)
    for i, c in enumerate(wanted, start=2):
        if (columns or n >= min_rows) and store.capabilities.ann_index:
            create_vector_index(store, table, c, index_type=index_type,
                                runner=runner)
            built.append(c)
        else:
            skipped.append(c)
        if progress:
            progress(f"index {table}", i, steps)
    return StepResult(step="index", table=table, details={
        "rows": n, "scalar": info.key, "score_indexes": scores, "vector_indexes": built,
        "exact_only": skipped, "min_rows": min_rows})


def _exact_dim(cls: Any, dim: int | None, unit: str) -> Any:
    """``cls``, or a subclass whose ``fit`` refuses (before anything is written) to give
    fewer dimensions than ``dim`` asked for: PCA and SVD cannot make more dimensions than the
    data has, and silently writing 64 when 100,000 were asked is a wrong answer."""
    if dim is None:
        return cls

    class Exact(cls):
        def fit(self, *args: Any, **kwargs: Any) -> Any:
            out = super().fit(*args, **kwargs)
            if self.dim_ < dim:
                raise ServiceError(
                    f"--dim {dim} is more than this data allows: the {cls.kind} embedder "
                    f"can make at most {self.dim_} dimensions here (from its {unit}); "
                    f"give --dim {self.dim_} or less")
            return out

    Exact.__name__ = Exact.__qualname__ = cls.__name__
    return Exact
