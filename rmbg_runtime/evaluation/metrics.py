"""DIS metrics as BiRefNet reports them, computed by PySODMetrics: maxFm, wFm, MAE, Sm, meanEm and
HCE over a dataset, plus per-image figures. Conventions (BiRefNet's eval): the prediction is
resized to the ground truth's size (bilinear), the ground truth is binarised at > 128 (inside
PySODMetrics), both are 8-bit."""

from __future__ import annotations

import cv2
import numpy as np
import py_sod_metrics as sod

SUMMARY_KEYS = ("maxFm", "wFm", "MAE", "Sm", "meanEm", "HCE")


def to_gt_size(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    if pred.shape == gt.shape:
        return pred
    return cv2.resize(pred, (gt.shape[1], gt.shape[0]), interpolation=cv2.INTER_LINEAR)


class _MetricSet:
    def __init__(self, hce: bool) -> None:
        self.fm, self.wfm, self.sm = sod.Fmeasure(), sod.WeightedFmeasure(), sod.Smeasure()
        self.em, self.mae = sod.Emeasure(), sod.MAE()
        self.hce = sod.HumanCorrectionEffortMeasure() if hce else None

    def step(self, pred: np.ndarray, gt: np.ndarray) -> None:
        for metric in (self.fm, self.wfm, self.sm, self.em, self.mae, self.hce):
            if metric is not None:
                metric.step(pred=pred, gt=gt)

    def results(self) -> dict[str, float]:
        out = {
            "maxFm": float(self.fm.get_results()["fm"]["curve"].max()),
            "wFm": float(self.wfm.get_results()["wfm"]),
            "MAE": float(self.mae.get_results()["mae"]),
            "Sm": float(self.sm.get_results()["sm"]),
            "meanEm": float(self.em.get_results()["em"]["curve"].mean()),
        }
        if self.hce is not None:
            out["HCE"] = float(self.hce.get_results()["hce"])
        return out


class DisMetrics:
    """Dataset-level figures (what papers report) and each image's own."""

    def __init__(self, hce: bool = True) -> None:
        self.hce = hce
        self._dataset = _MetricSet(hce)

    def step(self, pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
        """Add one (prediction, ground truth) pair of uint8 (H, W) arrays; returns its own figures."""
        if pred.dtype != np.uint8 or gt.dtype != np.uint8:
            raise ValueError("predictions and ground truth must be uint8")
        pred = to_gt_size(pred, gt)
        self._dataset.step(pred, gt)
        single = _MetricSet(hce=False)  # HCE per image would double the slowest metric
        single.step(pred, gt)
        return single.results()

    def summary(self) -> dict[str, float]:
        return self._dataset.results()
