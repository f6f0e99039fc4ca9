"""Figures of an evaluation: the confusion matrix (``keras-deeplab evaluate --plot-confusion``).

Needs matplotlib (the ``plot`` extra: ``pip install 'keras_deeplab[plot]'``).
"""

from __future__ import annotations

import numpy as np


def normalize_rows(confusion):
    """Row-normalised confusion matrix: entry (i, j) is the fraction of the pixels of ground
    truth class i predicted as j; rows of classes without pixels are NaN.

    Args:
        confusion: int array (C, C), rows ground truth, columns prediction.

    Returns:
        float64 (C, C).
    """
    cm = np.asarray(confusion, np.float64)
    totals = cm.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, cm / np.where(totals > 0, totals, 1), np.nan)


def plot_confusion_matrix(confusion, path, class_names=None, title="confusion (rows: truth)"):
    """Draws the row-normalised confusion matrix (`normalize_rows`) as a PNG.

    Args:
        confusion: int array (C, C), rows ground truth, columns prediction (the
            ``"confusion_matrix"`` of `kd.training.evaluate`).
        path: str. Output image.
        class_names: list of C str or None ("0", "1" ...).
        title: str. Figure title.

    Raises:
        ImportError: matplotlib is missing.
        ValueError: a matrix that is not square, or names of another length.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(confusion)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"plot_confusion_matrix: expected a (C, C) matrix, got {cm.shape}.")
    n = cm.shape[0]
    names = [str(c) for c in (class_names if class_names is not None else range(n))]
    if len(names) != n:
        raise ValueError(f"{len(names)} class names for a {n}x{n} confusion matrix.")
    side = min(4 + 0.35 * n, 30)
    fig, ax = plt.subplots(figsize=(side, side))
    image = ax.imshow(normalize_rows(cm), vmin=0, vmax=1, cmap="Blues")
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xticklabels(names, rotation=90)
    ax.set_yticklabels(names)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
