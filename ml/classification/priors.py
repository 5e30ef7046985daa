"""Class priors: how often each class is expected among the cells analysed, applied by Bayes' rule.

A classifier trained with balanced classes answers as if every class were equally common. In a
peripheral-blood smear they are not: most white cells are neutrophils and lymphocytes, eosinophils
and basophils are rare. Given the prior ``pi`` of the cells to analyse and the prior ``q`` the model
was trained under, the probabilities become ``p(c|x) * pi(c) / q(c)`` (renormalized): label-shift
correction, as analyzers trained on natural cell frequencies do implicitly.

``uniform`` leaves the model's answer unchanged; ``blood`` is the reference differential of a normal
adult peripheral-blood smear (textbook ranges: neutrophils 40-70 %, lymphocytes 20-40 %, monocytes
2-8 %, eosinophils 1-4 %, basophils 0.5-1 %, immature granulocytes under 0.5 %, no erythroblasts);
a JSON file ``{"class": weight, ...}`` gives any other. The price of a prior is sensitivity to
what it calls rare: a sample far from it (an eosinophilia, a leukaemia) is pulled towards it, so
reviewers must see every cell either way.

:func:`adapt` lessens that price where a sample holds many cells: it estimates the sample's own
class frequencies from the model's answers (the EM of Saerens, Latinne and Decaestecker, 2002, with
the prior as a Dirichlet pseudo-count of ``strength`` cells), so a slide of 200 cells with an
eosinophilia is judged with an eosinophil frequency near its own, while one or two cells keep the
prior.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

PERIPHERAL_BLOOD = {
    "neutrophil": 0.58, "lymphocyte": 0.30, "monocyte": 0.06, "eosinophil": 0.03, "basophil": 0.01,
    "ig": 0.005, "erythroblast": 0.002, "platelet": 0.005,
}
NAMED = {"uniform": None, "blood": PERIPHERAL_BLOOD}


def load_prior(spec: str | Path | dict | None) -> dict[str, float] | None:
    """``None``/``"uniform"`` (no prior), ``"blood"``, a ``{class: weight}`` dict or a JSON file of one."""
    if spec is None or isinstance(spec, dict):
        prior = spec
    elif str(spec) in NAMED:
        prior = NAMED[str(spec)]
    else:
        path = Path(spec)
        if not path.is_file():
            raise ValueError(f"unknown class prior {str(spec)!r}: use {', '.join(NAMED)} or a JSON file")
        try:
            prior = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not JSON ({exc})") from None
    if prior is None:
        return None
    if not isinstance(prior, dict) or not prior:
        raise ValueError("a class prior is a non-empty {class: weight} object")
    for k, v in prior.items():
        if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise ValueError(f"class prior of {k!r} must be a positive number, got {v!r}")
    return {str(k): float(v) for k, v in prior.items()}


def prior_vector(classes: list[str], prior: dict[str, float] | None) -> np.ndarray:
    """The prior over ``classes``, normalized; uniform without one.

    Classes the prior does not name get the mean weight of those it does.
    Class names match in any case (``Basophil`` is ``basophil``); a prior naming none of the classes
    is uniform, with a warning."""
    by_name = {str(k).strip().casefold(): v for k, v in (prior or {}).items()}
    weights = [by_name.get(c.casefold()) for c in classes]
    known = [w for w in weights if w is not None]
    if by_name and not known:
        import logging

        logging.getLogger(__name__).warning("the class prior names none of the model's classes (%s): uniform",
                                            ", ".join(classes))
    fill = float(np.mean(known)) if known else 1.0
    pi = np.array([fill if w is None else w for w in weights], np.float64)
    return pi / pi.sum()


def adapt(probabilities: np.ndarray, prior: np.ndarray, strength: float = 100.0,
          max_iter: int = 200, tol: float = 1e-7) -> tuple[np.ndarray, np.ndarray]:
    """Re-weight a sample's class probabilities towards the sample's own class frequencies.

    ``probabilities`` (cells x classes) were computed under ``prior`` (normalized, as
    :func:`prior_vector`). EM: the frequencies ``f`` are the mean of the cells' probabilities under
    ``f`` itself, plus ``strength`` pseudo-cells distributed as ``prior`` (a maximum a posteriori
    estimate with a Dirichlet prior); each cell's probabilities become ``p * f / prior``
    (renormalized). ``strength`` 0 trusts the sample alone; a large one keeps ``prior``.
    Returns the new probabilities and ``f``."""
    p = np.asarray(probabilities, np.float64)
    prior = np.asarray(prior, np.float64)
    if p.ndim != 2 or p.shape[1] != prior.shape[0]:
        raise ValueError(f"probabilities of shape {p.shape} do not match a prior over {prior.shape[0]} classes")
    if strength < 0:
        raise ValueError(f"adaptation strength must be >= 0, got {strength}")
    if len(p) == 0:
        return p.astype(np.float32), prior.copy()
    p = np.clip(p, 1e-12, None)
    p /= p.sum(1, keepdims=True)
    freq = prior.copy()
    post = p
    for _ in range(max_iter):
        post = p * (freq / prior)
        post /= post.sum(1, keepdims=True)
        new = (post.sum(0) + strength * prior) / (len(p) + strength)
        new = np.clip(new, 1e-12, None)
        new /= new.sum()
        done = np.abs(new - freq).max() < tol
        freq = new
        if done:
            break
    post = p * (freq / prior)
    post /= post.sum(1, keepdims=True)
    return post.astype(np.float32), freq


def prior_shift(classes: list[str], prior: dict[str, float] | None,
                trained_prior: list[float] | None = None) -> np.ndarray:
    """``log(pi / q)`` per class, added to the (temperature-scaled) logits; zeros without a prior
    (:func:`prior_vector` fills classes the prior does not name)."""
    k = len(classes)
    pi = prior_vector(classes, prior)
    q = np.full(k, 1.0 / k) if trained_prior is None else np.clip(np.asarray(trained_prior, np.float64), 1e-6, None)
    return (np.log(pi) - np.log(q / q.sum())).astype(np.float32)
