"""Pareto utilities for minimisation: fronts, crowding, hypervolume (via pymoo, which is well
tested for these; our genome is variable-length, so only its indicators are used, not its
operators)."""

from __future__ import annotations

import numpy as np
from pymoo.indicators.hv import HV
from pymoo.operators.survival.rank_and_crowding.metrics import calc_crowding_distance
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting


def fronts(F: np.ndarray) -> list[np.ndarray]:
    """Indices of F's rows by non-dominated front, best first. F: (n, n_objectives), minimised."""
    if len(F) == 0:
        return []
    return [np.asarray(f) for f in NonDominatedSorting().do(np.asarray(F, dtype=float))]


def pareto_mask(F: np.ndarray) -> np.ndarray:
    mask = np.zeros(len(F), dtype=bool)
    if len(F):
        mask[fronts(F)[0]] = True
    return mask


def rank_and_crowding_order(F: np.ndarray) -> np.ndarray:
    """NSGA-II order: by front, then by crowding distance (larger first) inside a front."""
    order: list[int] = []
    for front in fronts(F):
        cd = (
            calc_crowding_distance(np.asarray(F, dtype=float)[front]) if len(front) > 2 else np.full(len(front), np.inf)
        )
        order.extend(front[np.argsort(-cd, kind="stable")].tolist())
    return np.asarray(order, dtype=int)


def hypervolume(F: np.ndarray, ref: np.ndarray) -> float:
    """Hypervolume dominated by F's rows up to the reference point (0 when none dominate it)."""
    F = np.asarray(F, dtype=float)
    F = F[(F < ref).all(axis=1)] if len(F) else F
    return float(HV(ref_point=np.asarray(ref, dtype=float))(F)) if len(F) else 0.0
