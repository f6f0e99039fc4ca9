"""Coarse-to-fine search of the dense CRF parameters (DeepLab v2, Sec. 4.1)."""

import concurrent.futures
import dataclasses
import itertools

import numpy as np

from keras_deeplab.inference.crf import DenseCRF, _pool_context, default_num_workers
from keras_deeplab.np_metrics import confusion_matrix, mean_iou

# The paper's initial ranges: w1 in [3:6], sigma_alpha in [30:10:100], sigma_beta in [3:6].
PAPER_W1 = (3.0, 4.0, 5.0, 6.0)
PAPER_SXY = tuple(float(v) for v in range(30, 101, 10))
PAPER_SRGB = (3.0, 4.0, 5.0, 6.0)


@dataclasses.dataclass
class CRFSearchResult:
    """Outcome of `crf_search`.

    Args:
        baseline_miou: float. mIoU of the argmax of the un-refined probabilities.
        best_params: dict. `bilateral_compat`, `bilateral_sxy`, `bilateral_srgb`
            of the best setting.
        best_miou: float. mIoU with the best setting.
        table: list of dicts, one per setting tried, with `stage`
            (`"coarse"`/`"fine"`), the three parameters, `miou` and `delta`
            (miou - baseline_miou).
        base_config: dict. The `DenseCRF` config the search started from.
        num_images: int. Validation images used.
    """

    baseline_miou: float
    best_params: dict
    best_miou: float
    table: list
    base_config: dict
    num_images: int

    def best_crf(self):
        """A `DenseCRF` with the base settings and the best parameters."""
        return DenseCRF(**{**self.base_config, **self.best_params})

    @property
    def helps(self):
        """bool: the best setting beats the model without CRF (mIoU strictly higher)."""
        return bool(self.best_miou > self.baseline_miou)

    def verdict(self):
        """One sentence: whether the CRF helps this model, with the numbers."""
        if not self.helps:
            return (f"CRF does not help this model: mIoU without CRF {self.baseline_miou:.4f}, "
                    f"best with CRF {self.best_miou:.4f} ({self.num_images} images). "
                    "Predict without --crf.")
        return (f"CRF helps this model: mIoU {self.baseline_miou:.4f} -> {self.best_miou:.4f} "
                f"({100 * (self.best_miou - self.baseline_miou):+.2f} points, "
                f"{self.num_images} images) with {self.best_params}.")

    def to_dict(self):
        """JSON-ready record: verdict, baseline and best mIoU, best parameters, the full CRF
        config to use (``crf_config``: the base settings with the best parameters), the
        table. `load_crf_params` reads it back."""
        return {"verdict": self.verdict(), "helps": self.helps,
                "baseline_miou": float(self.baseline_miou), "best_miou": float(self.best_miou),
                "best_params": dict(self.best_params),
                "crf_config": {**self.base_config, **self.best_params},
                "num_images": int(self.num_images), "table": list(self.table)}

    def save(self, path):
        """Writes ``<path>`` (.json, `to_dict`) and the table as CSV next to it
        (``<stem>.csv``: stage, the three parameters, mIoU, delta). Returns both paths."""
        import csv
        import os

        from keras_deeplab.provenance import jsonable, write_json_atomic

        stem = os.path.splitext(path)[0]
        if os.path.dirname(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
        write_json_atomic(path, jsonable(self.to_dict()))
        columns = ["stage", "bilateral_compat", "bilateral_sxy", "bilateral_srgb", "miou",
                   "delta"]
        with open(stem + ".csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            for row in sorted(self.table, key=lambda r: -r["miou"]):
                writer.writerow({k: row[k] for k in columns})
        return path, stem + ".csv"

    def to_markdown(self):
        """The verdict and the table of settings as Markdown, best first."""
        lines = [
            f"Dense CRF search on {self.num_images} images; mIoU without CRF "
            f"{self.baseline_miou:.4f}, best {self.best_miou:.4f} with {self.best_params}",
            "",
            self.verdict(),
            "",
            "| stage | w1 (bilateral_compat) | sigma_alpha (bilateral_sxy) | sigma_beta "
            "(bilateral_srgb) | mIoU before | mIoU after | delta |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in sorted(self.table, key=lambda r: -r["miou"]):
            lines.append(
                f"| {row['stage']} | {row['bilateral_compat']:g} | {row['bilateral_sxy']:g} | "
                f"{row['bilateral_srgb']:g} | {self.baseline_miou:.4f} | {row['miou']:.4f} | "
                f"{row['delta']:+.4f} |"
            )
        return "\n".join(lines)

    def __str__(self):
        return self.to_markdown()


def load_crf_params(path):
    """The `DenseCRF` a `CRFSearchResult.save` JSON file describes (``crf_config``), and the
    file's record (with ``verdict`` and ``helps``).

    Raises:
        ValueError: the file is not a crf-search result (names the file).
    """
    import json

    with open(path) as f:
        try:
            record = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not JSON ({e}); pass the .json file "
                             "`keras-deeplab crf-search` wrote.") from None
    if not isinstance(record, dict) or "crf_config" not in record:
        raise ValueError(f"{path} has no 'crf_config': pass the .json file "
                         "`keras-deeplab crf-search --output` wrote.")
    return DenseCRF(**record["crf_config"]), record


# Shared with forked workers through the pool initializer (no per-task copies).
_SHARED = {}


def _init_worker(images, probabilities, labels, num_classes):
    _SHARED.update(images=images, probs=probabilities, labels=labels, num_classes=num_classes)


def _evaluate(task):
    config, index = task
    crf = DenseCRF(**config)
    q = crf.refine(_SHARED["images"][index], _SHARED["probs"][index])
    return confusion_matrix(_SHARED["labels"][index], q.argmax(-1), _SHARED["num_classes"], strict=False)


def _collect(predictor_or_probabilities, images, labels, max_images):
    from keras_deeplab.inference.image_io import to_image_array

    if labels is None:
        from keras_deeplab.data.batches import take_images

        images, labels = take_images(images, max_images or 10**9)
        if labels is None:
            raise ValueError(
                "crf_search needs ground-truth masks: pass labels=, or a dataset "
                "yielding {'images', 'segmentation_masks'} / (images, masks)."
            )
    images = [to_image_array(im)[0] for im in list(images)[: max_images or None]]
    labels = [np.asarray(lb).astype(np.int32) for lb in list(labels)[: len(images)]]
    labels = [lb[..., 0] if lb.ndim == 3 else lb for lb in labels]
    if len(labels) != len(images):
        raise ValueError(f"crf_search got {len(images)} images but {len(labels)} masks.")
    for i, (im, lb) in enumerate(zip(images, labels)):
        if lb.shape != im.shape[:2]:
            raise ValueError(f"Mask {i} has shape {lb.shape}, its image {im.shape[:2]}.")
    if hasattr(predictor_or_probabilities, "predict"):
        probs = [predictor_or_probabilities.predict(im, crf=False).probabilities for im in images]
    else:
        probs = [np.asarray(p, np.float32) for p in predictor_or_probabilities][: len(images)]
        if len(probs) != len(images):
            raise ValueError(f"crf_search got {len(images)} images but {len(probs)} probability maps.")
    for i, (im, p) in enumerate(zip(images, probs)):
        if p.shape[:2] != im.shape[:2]:
            raise ValueError(f"Probabilities {i} have shape {p.shape}, its image {im.shape[:2]}.")
    return images, probs, labels


def crf_search(
    predictor_or_probabilities,
    images,
    labels=None,
    w1_values=PAPER_W1,
    sxy_values=PAPER_SXY,
    srgb_values=PAPER_SRGB,
    fine=True,
    fine_steps=(0.5, 5.0, 0.5),
    base_crf=None,
    max_images=100,
    num_workers=None,
    progress=True,
    verbose=True,
):
    """Searches the bilateral-kernel parameters of the dense CRF on validation data.

    Follows DeepLab v2 (Sec. 4.1): the Gaussian kernel stays fixed (w2 = 3,
    sigma_gamma = 3 by default, from `base_crf`) and the bilateral weight
    w1, spatial sigma_alpha and colour sigma_beta are searched on a
    validation subset (the paper uses 100 images) with a coarse grid —
    w1 in [3:6], sigma_alpha in [30:10:100], sigma_beta in [3:6] — followed
    by a fine grid of +-1 step (`fine_steps`) around the best coarse setting.
    Each setting is scored by mIoU (ignore label 255) over the subset; the
    CRF runs in a process pool over (setting, image) pairs.

    Args:
        predictor_or_probabilities: a `Predictor` (its probabilities without
            CRF are used) or a list of (H, W, C) probability maps.
        images: list of images (uint8 arrays or paths), or a dataset of
            `{"images", "segmentation_masks"}` / `(images, masks)` when
            `labels` is None.
        labels: list of int (H, W) masks, ignore label 255.
        w1_values, sxy_values, srgb_values: coarse grids. Default to the paper's.
        fine: bool. Run the fine stage. Defaults to True.
        fine_steps: (dw1, dsxy, dsrgb) fine-grid steps. Defaults to (0.5, 5, 0.5).
        base_crf: `DenseCRF` giving the fixed settings (iterations, Gaussian
            kernel, scale...). Defaults to `DenseCRF()`.
        max_images: int. Validation subset size. Defaults to 100.
        num_workers: int or None. Processes. Defaults to all usable cores.
        progress: bool. tqdm progress bar. Defaults to True.
        verbose: bool. Print the result table. Defaults to True.

    Returns:
        `CRFSearchResult` (`best_params`, `best_crf()`, `table`, `to_markdown()`).

    Example:

    ```python
    result = kd.inference.crf_search(pred, val_images, val_masks, max_images=100)
    pred.crf = result.best_crf()
    ```
    """
    from tqdm.auto import tqdm

    images, probs, labels = _collect(predictor_or_probabilities, images, labels, max_images)
    num_classes = int(probs[0].shape[-1])
    base = (base_crf or DenseCRF()).get_config()
    base["num_workers"] = None

    baseline = np.zeros((num_classes, num_classes), np.int64)
    for p, lb in zip(probs, labels):
        baseline += confusion_matrix(lb, p.argmax(-1), num_classes, strict=False)
    baseline_miou = mean_iou(baseline)

    workers = max(1, int(num_workers or default_num_workers()))
    results = {}
    table = []

    def run_stage(stage, settings):
        settings = [s for s in settings if s not in results]
        if not settings:
            return
        tasks = [
            (s, {**base, "bilateral_compat": s[0], "bilateral_sxy": s[1], "bilateral_srgb": s[2]}, i)
            for s in settings
            for i in range(len(images))
        ]
        confusions = {s: np.zeros((num_classes, num_classes), np.int64) for s in settings}
        bar = tqdm(total=len(tasks), desc=f"CRF search ({stage})", unit="crf", disable=not progress)
        try:
            if workers == 1:
                _init_worker(images, probs, labels, num_classes)
                outputs = (_evaluate((cfg, i)) for _, cfg, i in tasks)
                pool = None
            else:
                pool = concurrent.futures.ProcessPoolExecutor(
                    max_workers=workers,
                    mp_context=_pool_context(),
                    initializer=_init_worker,
                    initargs=(images, probs, labels, num_classes),
                )
                outputs = pool.map(_evaluate, [(cfg, i) for _, cfg, i in tasks], chunksize=1)
            for (s, _, _), conf in zip(tasks, outputs):
                confusions[s] += conf
                bar.update(1)
        finally:
            bar.close()
            if workers > 1:
                pool.shutdown()
        for s in settings:
            miou = mean_iou(confusions[s])
            results[s] = miou
            table.append(
                {
                    "stage": stage,
                    "bilateral_compat": s[0],
                    "bilateral_sxy": s[1],
                    "bilateral_srgb": s[2],
                    "miou": miou,
                    "delta": miou - baseline_miou,
                }
            )

    coarse = list(
        itertools.product(
            [float(v) for v in w1_values],
            [float(v) for v in sxy_values],
            [float(v) for v in srgb_values],
        )
    )
    if not coarse:
        raise ValueError("crf_search needs at least one value per parameter grid.")
    run_stage("coarse", coarse)
    if fine:
        b = max(results, key=results.get)
        dw, dxy, drgb = fine_steps
        grid = itertools.product(
            [b[0] - dw, b[0], b[0] + dw],
            [b[1] - dxy, b[1], b[1] + dxy],
            [b[2] - drgb, b[2], b[2] + drgb],
        )
        run_stage("fine", [s for s in grid if s[1] > 0 and s[2] > 0 and s[0] >= 0])
    best = max(results, key=results.get)
    result = CRFSearchResult(
        baseline_miou=baseline_miou,
        best_params={"bilateral_compat": best[0], "bilateral_sxy": best[1], "bilateral_srgb": best[2]},
        best_miou=results[best],
        table=table,
        base_config=base,
        num_images=len(images),
    )
    if verbose:
        print(result.to_markdown())
    return result
