"""The model contract (docs/contracts.md): an ONNX file scored with onnxruntime, plus decisions.

Both serving paths load the model through :class:`OnnxModel` and turn scores into
decisions with :func:`decide`, so a threshold means the same thing in batch and online.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from fraudkit.features import FEATURE_COLUMNS

DECISIONS = ("approve", "review", "decline")


@dataclass(frozen=True)
class Thresholds:
    """``score >= decline`` declines; ``review <= score < decline`` goes to a person."""

    review: float
    decline: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.review <= self.decline <= 1.0:
            raise ValueError(
                f"thresholds must satisfy 0 <= review <= decline <= 1, got review="
                f"{self.review}, decline={self.decline}"
            )

    def as_dict(self) -> dict[str, float]:
        return {"review": self.review, "decline": self.decline}


def decide(scores: np.ndarray, thresholds: Thresholds) -> np.ndarray:
    """approve / review / decline for each score (object array of strings)."""
    scores = np.asarray(scores, dtype=np.float64)
    idx = (scores >= thresholds.review).astype(np.int8) + (scores >= thresholds.decline)
    return np.asarray(DECISIONS, dtype=object)[idx]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class OnnxModel:
    """An onnxruntime session over a ``[N, F]`` float32 input returning P(fraud).

    ``threads`` bounds onnxruntime's intra-op pool: 1 for the online service (one request
    is tiny, and a worker per core scales better than threads inside one request), 0 lets
    onnxruntime use every core for large batches.
    """

    def __init__(self, path: Path | str, threads: int = 0, content: bytes | None = None
                 ) -> None:
        """``content``, when given, is the model file's bytes (``path`` then only names it
        in messages): a Dask worker scores the very bytes the step verified, without
        reading the registry."""
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.path = Path(path)
        self.session = ort.InferenceSession(
            content if content is not None else str(self.path), sess_options=options,
            providers=["CPUExecutionProvider"]
        )
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or inputs[0].shape[-1] not in (len(FEATURE_COLUMNS), None):
            raise ValueError(
                f"{self.path}: expected one input of shape [N, {len(FEATURE_COLUMNS)}], got "
                f"{[(i.name, i.shape) for i in inputs]}"
            )
        self.input_name = inputs[0].name
        outputs = [o.name for o in self.session.get_outputs()]
        self.output_name = "probabilities" if "probabilities" in outputs else outputs[-1]

    def predict(self, features: np.ndarray) -> np.ndarray:
        """P(fraud) for each row of a float32 ``[N, F]`` matrix, as float64."""
        if features.dtype != np.float32:
            features = features.astype(np.float32)
        (probs,) = self.session.run([self.output_name], {self.input_name: features})
        probs = np.asarray(probs)
        return (probs[:, 1] if probs.ndim == 2 else probs).astype(np.float64)
