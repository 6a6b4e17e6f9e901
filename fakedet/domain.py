"""Out-of-domain flag: how unlike the training embeddings an image is.

A ``DomainModel`` keeps a compact summary of the training embeddings: a scikit-learn
``Pipeline(NoiseFloorScaler, PCA(whiten=True))`` subspace (a ``StandardScaler`` that leaves
float-noise columns unscaled). An embedding's ``domain_score`` adds
the two classic PCA statistics, each scaled to 1 on average over the training rows:

* Hotelling's T^2 inside the subspace (the squared Mahalanobis distance of the whitened
  components, divided by the number of components), and
* Q, the squared residual outside it (what the subspace cannot reconstruct).

A new domain may look ordinary in the top components and be far off in the rest, or the other
way round; the sum catches both. The threshold is the ``in_domain_rate`` quantile of the scores
of held-out rows of the training domain (the model's val split), so about that share of
in-domain images is called in domain. Torch-free; the pipeline is saved with skops like a head.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.decomposition import PCA
from sklearn.pipeline import Pipeline

from .heads import NoiseFloorScaler

DEFAULT_RATE = 0.99
DEFAULT_COMPONENTS = 64
FIT_ROWS = 20_000  # training rows the summary is fitted on, at most
FIT_BYTES = 2 * 2**30  # and at most this much float64 per copy of them (wide fused sets get fewer rows)
ROUNDING = 1e-9  # Q below this share of the rows' squared norm is rounding: its scale is floored there
SCORE_BYTES = 256 * 2**20  # float64 per copy of the rows scored at a time (each copy made several times)


@dataclass
class DomainModel:
    """A fitted training-domain summary with a calibrated out-of-domain threshold."""

    pipeline: Pipeline
    t2_scale: float
    q_scale: float
    threshold: float = float("inf")
    in_domain_rate: float = DEFAULT_RATE

    @classmethod
    def fit(cls, X: np.ndarray, rows: np.ndarray | None = None, *, n_components: int = DEFAULT_COMPONENTS,
            max_rows: int = FIT_ROWS, random_state: int = 0) -> "DomainModel":
        """Fit the subspace on training embeddings ``X[rows]`` (default: all rows), at most ``max_rows`` of
        them (and at most ``fit_rows(width)``) drawn at random (a summary needs no more; 100k 10k-d rows
        would need tens of GB in float64); call ``calibrate`` before ``flag``."""
        rows = np.arange(len(X)) if rows is None else np.asarray(rows)
        max_rows = min(max_rows, fit_rows(X.shape[1]))
        if len(rows) > max_rows:
            rows = np.sort(np.random.default_rng(random_state).choice(rows, max_rows, replace=False))
        X = np.asarray(X[rows], np.float64)
        if len(X) < 3:
            raise ValueError("the out-of-domain summary needs at least 3 training rows")
        k = max(1, min(n_components, X.shape[1], len(X) - 1))
        scale = NoiseFloorScaler().fit(X)
        X = scale.transform(X, copy=False)  # our own float64 copy: scaled in place
        pipeline = Pipeline([("scale", scale),
                             ("pca", PCA(n_components=k, whiten=True, random_state=random_state).fit(X))])
        blocks = BlockScores(pipeline, len(X)).add(X, scaled=True)
        t2, q = blocks.statistics()
        q_floor = max(ROUNDING * blocks.squares.mean(), 1e-12)  # rows inside the subspace: Q is rounding
        return cls(pipeline=pipeline, t2_scale=float(max(t2.mean(), 1e-12)), q_scale=float(max(q.mean(), q_floor)))

    def score(self, X: np.ndarray) -> np.ndarray:
        """Domain score per row (about 1 on training data; larger = further out)."""
        return self.scores_of(BlockScores(self.pipeline, len(X)).add(X))

    def scores_of(self, blocks: "BlockScores") -> np.ndarray:
        """The domain score of each row of ``blocks`` once every block of columns is added."""
        t2, q = blocks.statistics()
        return (t2 / self.t2_scale + q / self.q_scale) / 2

    def calibrate(self, X_held_out: np.ndarray, in_domain_rate: float = DEFAULT_RATE) -> "DomainModel":
        """Set the threshold so ``in_domain_rate`` of these in-domain rows fall below it."""
        return self.calibrate_scores(self.score(X_held_out), in_domain_rate)

    def calibrate_scores(self, held_out_scores: np.ndarray, in_domain_rate: float = DEFAULT_RATE) -> "DomainModel":
        """``calibrate`` from the held-out rows' scores (``score`` or ``scores_of``)."""
        if not 0.5 <= in_domain_rate < 1:
            raise ValueError(f"in-domain rate must be in [0.5, 1), not {in_domain_rate}")
        if len(held_out_scores) == 0:
            raise ValueError("calibrating the out-of-domain threshold needs held-out rows of the training domain")
        self.threshold = float(np.quantile(held_out_scores, in_domain_rate))
        self.in_domain_rate = float(in_domain_rate)
        return self

    def flag(self, X: np.ndarray) -> np.ndarray:
        """True where a row is out of the training domain."""
        return self.score(X) > self.threshold

    @property
    def meta(self) -> dict:
        """The numbers saved beside the pipeline (model.json)."""
        return {"t2_scale": self.t2_scale, "q_scale": self.q_scale, "threshold": self.threshold,
                "in_domain_rate": self.in_domain_rate, "n_components": int(self.pipeline["pca"].n_components_)}

    @classmethod
    def from_meta(cls, pipeline: Pipeline, meta: dict) -> "DomainModel":
        return cls(pipeline=pipeline, t2_scale=float(meta["t2_scale"]), q_scale=float(meta["q_scale"]),
                   threshold=float(meta["threshold"]), in_domain_rate=float(meta["in_domain_rate"]))


def fit_rows(width: int) -> int:
    """Rows the summary of ``width``-column embeddings is fitted on, at most: ``FIT_ROWS``, fewer when a
    float64 copy of them would pass ``FIT_BYTES`` (every set up to 13,400 columns gets ``FIT_ROWS``)."""
    return int(max(100, min(FIT_ROWS, FIT_BYTES // (8 * max(width, 1)))))


class BlockScores:
    """Domain scores of rows whose columns come a block at a time (a fused model's sets, one in memory at
    a time): both statistics are sums over columns once the rows are centred, so each block adds its
    projection onto the components and its squared norm. ``add`` every block, then
    ``DomainModel.scores_of``."""

    def __init__(self, pipeline: Pipeline, n_rows: int):
        self.pipeline = pipeline
        pca: PCA = pipeline["pca"]
        self.projected = np.zeros((n_rows, pca.n_components_))
        self.squares = np.zeros(n_rows)

    def add(self, X: np.ndarray, columns: slice = slice(None), *, scaled: bool = False) -> "BlockScores":
        """Add rows ``X`` holding ``columns`` of the summary's columns (already through its scaler if
        ``scaled``), ``SCORE_BYTES`` of float64 rows at a time."""
        scale, pca = self.pipeline["scale"], self.pipeline["pca"]
        mean, components = pca.mean_[columns], pca.components_[:, columns]
        offset, stretch = scale.mean_[columns], scale.scale_[columns]
        if X.shape[1] != len(mean):
            raise ValueError(f"a block of {X.shape[1]} columns for {len(mean)} columns of the summary")
        step = max(1, SCORE_BYTES // (8 * max(X.shape[1], 1)))  # 26,000 rows of 1,280 columns, 490 of 68,000
        for start in range(0, len(X), step):
            rows = np.asarray(X[start:start + step], np.float64)
            centred = (rows if scaled else (rows - offset) / stretch) - mean
            self.projected[start:start + len(rows)] += centred @ components.T
            self.squares[start:start + len(rows)] += (centred ** 2).sum(axis=1)
        return self

    def statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """(T^2 per component, Q) of the rows added."""
        pca: PCA = self.pipeline["pca"]
        t2 = (self.projected ** 2 / pca.explained_variance_).sum(axis=1) / pca.n_components_
        return t2, np.maximum(self.squares - (self.projected ** 2).sum(axis=1), 0.0)

