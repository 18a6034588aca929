"""The offline responder's section ranker: which candidate section answers a message, and how likely.

A conditional logit (a softmax over one message's candidate sections and a "none of them" option)
over a dozen pieces of evidence the responder already has for each candidate section (FEATURES: how
near the section's bank questions are to the message, in meaning and in rare words, where the
knowledge-base search placed it, how much of the message's rare-word weight it holds, how near its
own text is), fitted on the tuning part of bench/data/answers only:

    .venv/bin/python bench/answers_eval.py --part tuning --fit-ranker

The candidates of one message compete: each one's probability is its share of the message's
probability mass, the rest going to "none of them" (an unanswerable message, or one whose answer is
not among the candidates), so the probabilities of one message's candidates sum to at most 1 and
two near-equal candidates each read as a guess. Fitted listwise (the likelihood of the labelled
section, or of the labelled ones together, among its message's candidates), it puts the right
section first more often than the pointwise logistic regression it replaced (session 15, 454 tuning
cases, 5-fold cross-validation on four fold assignments: 86.1 % against 83.6 % of answerable cases).

That command searches every tuning case as the responder does, computes the same evidence through
`activities.agent.offline.section_evidence`, and picks the threshold and the bank-similarity floor by
5-fold cross-validation: of the pairs at which the answerable cases answered wrongly stay within
`TARGET_WRONG` (at the upper end of a one-sided 95 % interval, `wrong_rate_bound`) and at most
`MAX_UNANSWERABLE_ANSWERED` of the unanswerable ones are answered, the
one answering the most correctly (of equals, the most cautious). It then fits on every tuning case
and writes `section_ranker.json` beside this module.

The answering confidence is a second, two-weight logistic regression over the log-odds of the best
section and its lead in log-odds over the second (`confidence`), fitted on the cross-validated picks
of the tuning cases; the threshold applies to it. (It was written for the pointwise model, whose
probabilities ignored the runner-up; over the listwise probabilities the fit gives the lead no weight
and only recalibrates, since the softmax already shares the mass between near-equal candidates.)

Below the threshold, a message two sections answer about equally well (an FAQ item and the section
its answer points to, two steps of one setup) is not always a hand-off: when the two likeliest
sections' probabilities together reach `pair_threshold` (one of them is then likely right) both are
sent, the customer picking the one that fits, provided the runner-up is at least a third as likely as
the best (`PAIR_MIN_SHARE`: a near tie, not a second section far behind). The fit chooses the pair
threshold after the threshold and the floor (which are chosen for single sections alone), on the same
cross-validated picks and the same bounds, judging the pair's reply as a whole: pairs only take what
would otherwise be handed off.

Nothing is trained at run time: a worker loads the file (a few numbers) once. The held-out part is
never read by the fit.

Deterministic: the same evidence always gives the same probability.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import numpy as np

MODEL_FILE = "section_ranker.json"

# bank_similarity past these knots (max(0, s - knot)) is evidence of its own: with non-negative weights,
# a monotone piecewise-linear curve, so a near-exact bank match can count for more than a linear term
# allows (offline.section_evidence computes them).
SIMILARITY_KNOTS: tuple[float, ...] = (0.6, 0.7, 0.8)

# The evidence, in the order the model reads it (offline.ranked_candidates computes each).
FEATURES: tuple[str, ...] = (
    "bank_similarity",  # mean cosine similarity of the section's two nearest bank questions
    "bank_nearest",  # similarity of its single nearest bank question
    "bank_behind_top",  # bank_similarity minus the best section's (0 for the best)
    "bank_rank_inverse",  # 1 / (1 + its place among the bank's sections)
    "bank_lead_other_articles",  # bank_similarity minus the best section of any other article
    "search_rank_inverse",  # 1 / (1 + its passage's place in the section search), 0 when not found
    "search_score",  # that passage's fused search score, 0 when not found
    "word_score",  # the message's rare words in the section (idf-weighted, saturating)
    "word_coverage",  # share of the message's rare-word weight the section, headings or title hold
    "text_similarity",  # cosine similarity of the section's own text to the message
    "article_behind_top",  # the article's best bank_similarity minus the best section's
    "agreement",  # 1 when the bank's best section is also among the search's passages
    "bank_words",  # BM25 of the message against the section's bank questions together, over the best section's
    "bank_words_nearest",  # BM25 of its single best-matching bank question, over the best question's
    "bank_classifier",  # the section classifier's score (n-grams and sentence vector, trained on the bank)
    "bank_votes",  # how many of the bank's readings (vectors, words, classifier) put this section first
    # of the sections under a heading (an introduction gets none)
    "under_heading",  # 1 for a section under a heading, 0 for an article's introduction (it summarises)
    *(f"bank_similarity_above_{knot:.1f}" for knot in SIMILARITY_KNOTS),
)

# The calibration bounds on the cross-validated tuning cases (bench/answers_eval.py --fit-ranker).
# Wrong answers: the target (at most 3 % of answerable questions answered wrongly), held by the
# upper end of the wrong share's one-sided 95 % Wilson interval over the tuning cases, not by the share
# itself. Until session 17 the share alone was bounded at 2 %, and fresh wording answered wrongly more
# often than that: blind rounds scored before they joined 4-11 %, and after session 17's refit (which
# the new blind round moved from 0.82 to 0.76) the held-out set 5.1 % (4 of 78). A bound on the
# interval asks the fewer cases and the closer calls for a safer threshold; a wrong answer costs more
# than a hand-off.
TARGET_WRONG = 0.03
WRONG_CONFIDENCE_Z = 1.645
MAX_UNANSWERABLE_ANSWERED = 0.10
# The L2 penalty on the standardised weights, chosen on the tuning cases' cross-validation (3, 10:
# the right section first 86.9 / 86.1 %, answered right within the bounds 65.5 / 70.0 %).
RIDGE = 10.0
# What the file's model is: a file of the pointwise regression this replaced is refused, not misread.
KIND = "listwise"
# A pair threshold no two probabilities reach (they sum to at most 1): a file without one sends no pairs.
PAIR_NEVER = 2.0
# A pair is a near tie: the runner-up at least this share of the best section's probability (a second
# section far behind the first would be sent for nothing). A fixed rule, not fitted.
PAIR_MIN_SHARE = 1 / 3


def near_tie(best: Any, runner_up: Any, pair_threshold: float) -> Any:
    """Whether the best section and the runner-up are likely as a pair and a near tie (PAIR_MIN_SHARE):
    for two probabilities, or elementwise for two arrays of them (the fit's grid)."""
    return (np.add(best, runner_up) >= pair_threshold) & (np.asarray(runner_up) >= PAIR_MIN_SHARE * np.asarray(best))


def wrong_rate_bound(wrong: float, cases: int) -> float:
    """The upper end of the one-sided Wilson score interval (WRONG_CONFIDENCE_Z) of a wrong share
    observed over `cases` cases (1.0 for no cases)."""
    if cases <= 0:
        return 1.0
    z2 = WRONG_CONFIDENCE_Z**2
    centre = wrong + z2 / (2 * cases)
    spread = WRONG_CONFIDENCE_Z * float(np.sqrt(wrong * (1 - wrong) / cases + z2 / (4 * cases**2)))
    return (centre + spread) / (1 + z2 / cases)


@dataclass(frozen=True)
class SectionRanker:
    """Standardised features, one weight each, the "none of them" option's score (`bias`), the
    answering threshold, and the bank similarity below which no section is sent whatever its
    probability (a floor the other evidence cannot lift: a section first by every rank but far from
    every customer wording is a guess)."""

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float
    threshold: float
    min_similarity: float = 0.0
    # The answering confidence's weights on the best section's log-odds and on its lead over the
    # runner-up's, and its bias (confidence()); (1, 0) and 0 make it the probability itself.
    confidence_weights: tuple[float, float] = (1.0, 0.0)
    confidence_bias: float = 0.0
    # Below the threshold, the two likeliest sections are sent together when their probabilities sum
    # to this (one of the two is then likely right, which of them is a guess); past 1, never.
    pair_threshold: float = PAIR_NEVER

    def confidence(self, probability: float, runner_up: float = 0.0) -> float:
        """How likely the best section (this probability) is right, given the runner-up's."""
        return answering_confidence(self.confidence_weights, self.confidence_bias, probability, runner_up)

    def answers(self, probability: float, evidence: Sequence[float], runner_up: float = 0.0) -> bool:
        """Whether a section this likely, with this evidence and this runner-up, is sent."""
        similarity = evidence[FEATURES.index("bank_similarity")]
        return self.confidence(probability, runner_up) >= self.threshold and similarity >= self.min_similarity

    def pairs(self, probability: float, runner_up: float, evidence: Sequence[float]) -> bool:
        """Whether the best section (this probability, this evidence) and the runner-up are sent
        together: the ranker is not sure enough of either alone (answers() said no), of the pair it is,
        and the two are a near tie (PAIR_MIN_SHARE)."""
        similarity = evidence[FEATURES.index("bank_similarity")]
        return bool(near_tie(probability, runner_up, self.pair_threshold)) and similarity >= self.min_similarity

    def probabilities(self, evidence: np.ndarray) -> np.ndarray:
        """The probability that each row's section is the one that answers the message, the rows being
        all of one message's candidates (they share the mass with "none of them")."""
        if evidence.size == 0:
            return np.zeros(0)
        z = (np.asarray(evidence, dtype=np.float64) - self.mean) / self.scale
        scores = np.append(z @ self.weights, self.bias)
        shares = np.exp(scores - scores.max())
        return np.asarray(shares[:-1] / shares.sum())

    def to_json(self, **provenance: Any) -> dict[str, Any]:
        return {
            "kind": KIND,
            "features": list(FEATURES),
            "mean": [round(float(v), 6) for v in self.mean],
            "scale": [round(float(v), 6) for v in self.scale],
            "weights": [round(float(v), 6) for v in self.weights],
            "bias": round(self.bias, 6),
            "threshold": round(self.threshold, 4),
            "pair_threshold": round(self.pair_threshold, 4),
            "min_similarity": round(self.min_similarity, 4),
            "confidence": {
                "weights": [round(float(v), 6) for v in self.confidence_weights],
                "bias": round(self.confidence_bias, 6),
            },
            **provenance,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SectionRanker:
        """The model as written by the fit; a file for other features is refused, not misread."""
        if tuple(data.get("features", ())) != FEATURES:
            raise ValueError(f"{MODEL_FILE} was fitted on other features: run bench/answers_eval.py --fit-ranker")
        if data.get("kind") != KIND:
            raise ValueError(f"{MODEL_FILE} holds another kind of model: run bench/answers_eval.py --fit-ranker")
        mean, scale, weights = (np.asarray(data[k], dtype=np.float64) for k in ("mean", "scale", "weights"))
        if any(a.shape != (len(FEATURES),) for a in (mean, scale, weights)) or np.any(scale <= 0):
            raise ValueError(f"{MODEL_FILE} is malformed")
        confidence = data.get("confidence", {"weights": [1.0, 0.0], "bias": 0.0})
        try:
            confidence_weights = tuple(float(v) for v in confidence["weights"])
            confidence_bias = float(confidence["bias"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{MODEL_FILE} is malformed: confidence") from exc
        if len(confidence_weights) != 2 or min(confidence_weights) < 0:
            raise ValueError(f"{MODEL_FILE} is malformed")
        return cls(
            mean=mean,
            scale=scale,
            weights=weights,
            bias=float(data["bias"]),
            threshold=float(data["threshold"]),
            pair_threshold=float(data.get("pair_threshold", PAIR_NEVER)),
            min_similarity=float(data.get("min_similarity", 0.0)),
            confidence_weights=(confidence_weights[0], confidence_weights[1]),
            confidence_bias=confidence_bias,
        )


# Probabilities are clipped to this distance from 0 and 1 before their log-odds are taken (a lone
# candidate's runner-up is 0).
_CLIP = 1e-3


def confidence_inputs(probability: float, runner_up: float) -> np.ndarray:
    """The confidence model's inputs: the best section's log-odds, and its lead over the runner-up's."""
    top, second = (float(np.log(p / (1 - p))) for p in np.clip([probability, runner_up], _CLIP, 1 - _CLIP))
    return np.array([top, top - second])


def answering_confidence(
    weights: tuple[float, float], bias: float, probability: float, runner_up: float = 0.0
) -> float:
    """The confidence model (weights and bias, fit_confidence) read for one best section and its runner-up."""
    z = float(np.dot(weights, confidence_inputs(probability, runner_up))) + bias
    return float(1.0 / (1.0 + np.exp(-z)))


def fit_confidence(
    probabilities: Sequence[float], runners_up: Sequence[float], right: Sequence[bool], *, ridge: float = 1.0
) -> tuple[tuple[float, float], float]:
    """The confidence model's two weights (never negative: a likelier best section, or a longer lead,
    never makes an answer less likely right) and its bias, from the best sections' cross-validated
    probabilities, their runners-up, and whether each was right."""
    z = np.array([[1.0, *confidence_inputs(p, q)] for p, q in zip(probabilities, runners_up, strict=True)])
    w = _fit_nonnegative(z, np.asarray(right, dtype=np.float64), ridge)
    return (float(w[1]), float(w[2])), float(w[0])


def fit(
    evidence: np.ndarray,
    labels: Sequence[bool] | np.ndarray,
    messages: Sequence[int] | np.ndarray,
    *,
    ridge: float = RIDGE,
    threshold: float = 0.5,
) -> SectionRanker:
    """The conditional logit over each message's candidates (rows of `evidence` with the same
    `messages` number; `labels` marks the sections that answer it, none for an unanswerable message),
    L2-regularised, every weight at least zero: more evidence for a section never makes it less likely.

    Every feature is built so that more means likelier (FEATURES). Unconstrained, the tuning set
    (written on purpose to avoid the articles' words) taught negative weights to word overlap and to
    the section's own text, and a plain "How do I export a project to CSV?" fell below the threshold
    it passes with these constraints. Fitted by Newton's method on the features still free, dropping
    any whose weight comes out negative and refitting, until none does (an active-set approximation to
    the constrained fit; a dozen features, a few rounds).
    """
    x = np.asarray(evidence, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    group = np.asarray(messages)
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-9] = 1.0  # a feature constant on the tuning set carries no weight
    z = (x - mean) / scale
    w, none = _fit_listwise(z, y, group, ridge)
    return SectionRanker(mean=mean, scale=scale, weights=w, bias=none, threshold=threshold)


def _fit_listwise(z: np.ndarray, y: np.ndarray, group: np.ndarray, ridge: float) -> tuple[np.ndarray, float]:
    """The weights (at least zero) and the "none of them" score of the conditional logit.

    Each message's rows and one "none" row (no evidence, its own score) form a softmax; the target is
    the labelled rows' total probability, or the none row's when no row is labelled.
    """
    # The message each row belongs to, renumbered 0..m-1, and a "none" row appended per message.
    number = np.unique(group, return_inverse=True)[1].reshape(-1)
    m, d = int(number.max(initial=-1)) + 1, z.shape[1]
    rows = np.vstack([np.hstack([z, np.zeros((len(z), 1))]), np.hstack([np.zeros((m, d)), np.ones((m, 1))])])
    owner = np.concatenate([number, np.arange(m)])
    answered = np.bincount(number, weights=y.astype(np.float64), minlength=m) > 0
    target = np.concatenate([y.astype(np.float64), (~answered).astype(np.float64)])
    free = np.ones(d + 1, dtype=bool)
    while True:
        theta = np.zeros(d + 1)
        theta[free] = _newton_listwise(rows[:, free], target, owner, m, ridge, penalised=free[:d].sum())
        negative = free.copy()
        negative[:d] &= theta[:d] < 0
        negative[d] = False  # the none option's score may take any sign
        if not negative.any():
            return theta[:d], float(theta[d])
        free &= ~negative


def _newton_listwise(
    rows: np.ndarray, target: np.ndarray, owner: np.ndarray, m: int, ridge: float, *, penalised: int
) -> np.ndarray:
    """Newton steps on the listwise log-likelihood (the last column, the none option's, unpenalised).

    With several labelled rows in a message the target is their total probability; the step uses
    their posterior shares as the target and the softmax's covariance as the curvature (the
    likelihood's concave part), and halves any step that does not improve the likelihood.
    """
    penalty = ridge * np.diag([1.0] * penalised + [0.0])
    theta = np.zeros(rows.shape[1])

    def softmax(theta: np.ndarray) -> np.ndarray:
        scores = rows @ theta
        top = np.full(m, -np.inf)
        np.maximum.at(top, owner, scores)
        shares = np.exp(scores - top[owner])
        return np.asarray(shares / np.bincount(owner, weights=shares, minlength=m)[owner])

    def objective(theta: np.ndarray) -> float:
        p = softmax(theta)
        return float(np.log(np.bincount(owner, weights=p * target, minlength=m) + 1e-300).sum()) - 0.5 * float(
            theta @ penalty @ theta
        )

    current = objective(theta)
    for _ in range(100):
        p = softmax(theta)
        q = p * target
        q /= np.bincount(owner, weights=q, minlength=m)[owner]
        gradient = rows.T @ (q - p) - penalty @ theta
        expected = np.zeros((m, rows.shape[1]))
        np.add.at(expected, owner, rows * p[:, None])
        curvature = (rows * p[:, None]).T @ rows - expected.T @ expected + penalty
        step = np.linalg.solve(curvature, gradient)
        for _ in range(30):
            candidate = objective(theta + step)
            if candidate >= current - 1e-12:
                break
            step /= 2
        theta += step
        current = candidate
        if np.abs(step).max() < 1e-8:
            break
    return theta


def _fit_nonnegative(z: np.ndarray, y: np.ndarray, ridge: float) -> np.ndarray:
    """Logistic regression weights (column 0 the bias, any sign; the others at least zero)."""
    free = np.ones(z.shape[1], dtype=bool)
    while True:
        w = np.zeros(z.shape[1])
        w[free] = _newton(z[:, free], y, ridge)
        negative = free & (w < 0)
        negative[0] = False  # the bias may take any sign
        if not negative.any():
            return w
        free &= ~negative


def _newton(z: np.ndarray, y: np.ndarray, ridge: float) -> np.ndarray:
    """Logistic regression weights (column 0 the unpenalised bias) by Newton's method."""
    penalty = ridge * np.diag([0.0, *np.ones(z.shape[1] - 1)])
    w = np.zeros(z.shape[1])
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-(z @ w)))
        gradient = z.T @ (p - y) + penalty @ w
        hessian = (z * (p * (1 - p))[:, None]).T @ z + penalty
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


@cache
def section_ranker() -> SectionRanker:
    """The shipped ranker (section_ranker.json), loaded once per process."""
    text = (resources.files("activities.agent") / MODEL_FILE).read_text(encoding="utf-8")
    return SectionRanker.from_json(json.loads(text))
