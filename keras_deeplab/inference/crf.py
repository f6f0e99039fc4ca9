"""Fully connected CRF post-processing (DeepLab v1/v2), on top of pydensecrf2."""

import concurrent.futures
import multiprocessing
import os
import sys

import numpy as np

# Parameter sets. The DeepLab v2 paper (Chen et al., TPAMI 2018, Sec. 4.1)
# fixes the Gaussian (smoothness) kernel to w2 = 3, sigma_gamma = 3 and
# cross-validates the bilateral (appearance) kernel over w1 in [3:6],
# sigma_alpha in [30:10:100], sigma_beta in [3:6]. The values below are the
# ones released with the DeepLab code for PASCAL VOC.
PRESETS = {
    # DeepLab v2 ResNet-101 (released test prototxt): bi_w 4, bi_xy 67, bi_rgb 3.
    "deeplab_v2_resnet101": dict(
        gaussian_sxy=3, gaussian_compat=3, bilateral_sxy=67, bilateral_srgb=3, bilateral_compat=4
    ),
    # DeepLab v2 VGG-16: pos 2/2, bi_w 4, bi_xy 65, bi_rgb 3.
    "deeplab_v2_vgg16": dict(
        gaussian_sxy=2, gaussian_compat=2, bilateral_sxy=65, bilateral_srgb=3, bilateral_compat=4
    ),
    # DeepLab v1 LargeFOV (VOC): pos 3/3, bi_w 4, bi_xy 121, bi_rgb 5.
    "deeplab_v1_largefov": dict(
        gaussian_sxy=3, gaussian_compat=3, bilateral_sxy=121, bilateral_srgb=5, bilateral_compat=4
    ),
}


def _import_densecrf():
    try:
        import pydensecrf.densecrf as dcrf
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "DenseCRF needs the `pydensecrf2` package (module `pydensecrf`): "
            "pip install 'keras_deeplab[crf]' or pip install pydensecrf2."
        ) from e
    return dcrf


# The two resizers below stay private PIL ones rather than keras_deeplab.utils'
# resize_bilinear: those run keras.ops (TensorFlow) and `refine_batch` runs `refine` in
# fork()ed workers, where TensorFlow's thread pools are not fork-safe; PIL keeps the workers
# TF-free. They also antialias when shrinking (`scale < 1`), which utils' resizer does not.
def _resize_channels(array, size):
    """Bilinear (antialiased when shrinking) resize of an (H, W, C) float map."""
    from PIL import Image

    h, w = size
    if array.shape[:2] == (h, w):
        return np.asarray(array, np.float32)
    out = np.empty((h, w, array.shape[2]), np.float32)
    for c in range(array.shape[2]):
        channel = Image.fromarray(np.ascontiguousarray(array[..., c], np.float32), mode="F")
        out[..., c] = np.asarray(channel.resize((w, h), Image.BILINEAR))
    return out


def _resize_image(image, size):
    from PIL import Image

    h, w = size
    if image.shape[:2] == (h, w):
        return image
    return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))


def _pool_context():
    # fork shares the parent's memory (no re-import of TensorFlow in the
    # workers, which only run NumPy + pydensecrf); spawn elsewhere.
    if sys.platform.startswith("linux"):
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def default_num_workers():
    """Usable CPU cores (affinity-aware)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


class DenseCRF:
    """Fully connected CRF refinement of per-pixel class probabilities.

    The DeepLab v1/v2 post-processing (Krähenbühl & Koltun, NIPS 2011):
    unary `-log p` from the network's probabilities, a Gaussian smoothness
    kernel `w2 * exp(-|p_i - p_j|^2 / 2 sigma_gamma^2)` and a bilateral
    appearance kernel `w1 * exp(-|p_i - p_j|^2 / 2 sigma_alpha^2
    - |I_i - I_j|^2 / 2 sigma_beta^2)`, both with Potts compatibility,
    solved by `iterations` rounds of mean-field inference with
    `pydensecrf2` (permutohedral lattice).

    Two optional speed-ups, off by default (exact paper behaviour):

    - `scale < 1` runs the CRF on an image and probability map shrunk by
      `scale` (spatial sigmas shrunk by the same factor; pydensecrf's kernels
      are normalised, so the weights stay), then upsamples the refined
      probabilities bilinearly. The lattice cost is linear in the number of
      pixels, so `scale=0.5` is about 4x faster; boundaries are placed on the
      coarse grid.
    - `min_label_probability` drops the labels whose probability never
      reaches it anywhere in the image (cost is linear in the number of
      labels; most images contain few of the 19-21 classes). Dropped labels
      get probability 0.

    Args:
        iterations: int. Mean-field iterations. Defaults to 10.
        gaussian_sxy: float. sigma_gamma, pixels. Defaults to 3.
        gaussian_compat: float. w2. Defaults to 3.
        bilateral_sxy: float. sigma_alpha, pixels. Defaults to 67.
        bilateral_srgb: float. sigma_beta, colour levels. Defaults to 3.
        bilateral_compat: float. w1. Defaults to 4.
        scale: float in (0, 1]. Resolution at which the CRF runs. Defaults to 1.
        min_label_probability: float or None. Label pruning threshold.
            Defaults to None (no pruning).
        unary_clip: float. Probabilities are clipped to at least this before
            the log (as `pydensecrf.utils.unary_from_softmax`). Defaults to 1e-5.
        num_workers: int or None. Processes used by `refine_batch`.
            Defaults to None (all usable cores).

    Defaults are the DeepLab v2 ResNet-101 PASCAL VOC values (`w2 = 3`,
    `sigma_gamma = 3` fixed in the paper; `w1 = 4`, `sigma_alpha = 67`,
    `sigma_beta = 3` from cross-validation); see `DenseCRF.from_preset` and
    `kd.inference.crf_search` to tune them for another dataset.

    Example:

    ```python
    crf = kd.inference.DenseCRF(iterations=10)
    refined = crf.refine(image_uint8, probabilities)      # (H, W, C)
    refined = crf.refine_batch(images, probabilities)     # process pool
    ```

    Reference: Chen et al., "DeepLab: Semantic Image Segmentation with Deep
    Convolutional Nets, Atrous Convolution, and Fully Connected CRFs",
    TPAMI 2018.
    """

    def __init__(
        self,
        iterations=10,
        gaussian_sxy=3.0,
        gaussian_compat=3.0,
        bilateral_sxy=67.0,
        bilateral_srgb=3.0,
        bilateral_compat=4.0,
        scale=1.0,
        min_label_probability=None,
        unary_clip=1e-5,
        num_workers=None,
    ):
        if int(iterations) < 0:
            raise ValueError(f"iterations must be >= 0, got {iterations}.")
        if not 0 < float(scale) <= 1:
            raise ValueError(f"scale must be in (0, 1], got {scale}.")
        for name, value in (
            ("gaussian_sxy", gaussian_sxy),
            ("bilateral_sxy", bilateral_sxy),
            ("bilateral_srgb", bilateral_srgb),
        ):
            if float(value) <= 0:
                raise ValueError(f"{name} must be > 0, got {value}.")
        self.iterations = int(iterations)
        self.gaussian_sxy = float(gaussian_sxy)
        self.gaussian_compat = float(gaussian_compat)
        self.bilateral_sxy = float(bilateral_sxy)
        self.bilateral_srgb = float(bilateral_srgb)
        self.bilateral_compat = float(bilateral_compat)
        self.scale = float(scale)
        self.min_label_probability = (
            None if min_label_probability is None else float(min_label_probability)
        )
        self.unary_clip = float(unary_clip)
        self.num_workers = num_workers

    @classmethod
    def from_preset(cls, name, **overrides):
        """Builds a CRF from a published parameter set.

        Args:
            name: str. One of `"deeplab_v2_resnet101"`, `"deeplab_v2_vgg16"`,
                `"deeplab_v1_largefov"`.
            **overrides: any constructor argument.
        """
        if name not in PRESETS:
            raise ValueError(f"Unknown CRF preset {name!r}; choose from {sorted(PRESETS)}.")
        return cls(**{**PRESETS[name], **overrides})

    def get_config(self):
        return {
            "iterations": self.iterations,
            "gaussian_sxy": self.gaussian_sxy,
            "gaussian_compat": self.gaussian_compat,
            "bilateral_sxy": self.bilateral_sxy,
            "bilateral_srgb": self.bilateral_srgb,
            "bilateral_compat": self.bilateral_compat,
            "scale": self.scale,
            "min_label_probability": self.min_label_probability,
            "unary_clip": self.unary_clip,
            "num_workers": self.num_workers,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"DenseCRF({args})"

    def __eq__(self, other):
        return isinstance(other, DenseCRF) and self.get_config() == other.get_config()

    def _check(self, image, probs):
        image = np.asarray(image)
        probs = np.asarray(probs)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"DenseCRF expects an RGB image (H, W, 3), got shape {image.shape}.")
        if probs.ndim != 3 or probs.shape[:2] != image.shape[:2]:
            raise ValueError(
                f"DenseCRF expects probabilities (H, W, C) matching the image "
                f"{image.shape[:2]}, got shape {probs.shape}."
            )
        if image.dtype != np.uint8:
            if not np.issubdtype(image.dtype, np.number) or image.dtype == np.bool_:
                raise ValueError(f"DenseCRF expects a uint8 RGB image, got dtype {image.dtype}.")
            if image.size and not np.all(np.isfinite(image)):
                raise ValueError("DenseCRF: the image holds NaN or infinite values; pass the "
                                 "uint8 RGB image the model was given.")
            if image.size and (image.min() < 0 or image.max() > 255):
                raise ValueError(
                    f"DenseCRF expects image values in [0, 255] (uint8); got range "
                    f"[{image.min()}, {image.max()}]. Pass the original RGB image, not the "
                    "model's normalised input.")
            if np.issubdtype(image.dtype, np.floating) and image.size and image.max() <= 1.0:
                raise ValueError(
                    f"DenseCRF: the float image has all its values in [0, 1] (max "
                    f"{float(image.max()):.3g}); its colours would round to 0 and 1. Pass "
                    "np.round(image * 255).astype(np.uint8).")
            image = np.round(image).astype(np.uint8)
        probs = np.asarray(probs, np.float32)
        if probs.size and not np.all(np.isfinite(probs)):
            raise ValueError(
                f"DenseCRF: the probabilities hold {int(np.sum(~np.isfinite(probs)))} NaN or "
                "infinite values; check the model output (a diverged model, or a NaN input).")
        if probs.size and (probs.min() < 0 or probs.max() > 1 + 1e-4):
            raise ValueError(
                f"DenseCRF expects softmax probabilities in [0, 1]; got range [{probs.min():.4g}, "
                f"{probs.max():.4g}], which looks like logits. Apply a softmax over the class "
                "axis first: scipy.special.softmax(logits, axis=-1), or use the Predictor's "
                "probabilities.")
        sums = probs.sum(-1)
        worst = float(np.max(np.abs(sums - 1.0))) if sums.size else 0.0
        if worst > 1e-3:
            raise ValueError(
                f"DenseCRF expects probabilities that sum to 1 over the {probs.shape[-1]} classes "
                f"at every pixel; some pixel sums are off by {worst:.3g} (sigmoid outputs or "
                "unnormalised scores). Apply a softmax to the logits (scipy.special.softmax("
                "logits, axis=-1)) or normalise: probs / probs.sum(-1, keepdims=True).")
        return np.ascontiguousarray(image), probs

    def refine(self, image, probabilities):
        """Refines one probability map.

        Args:
            image: uint8 array (H, W, 3), RGB in [0, 255] (floats in [0, 255] are rounded).
            probabilities: float array (H, W, C), softmax output (rows sum to 1).

        Returns:
            float32 array (H, W, C): the mean-field marginals.

        Raises:
            ValueError: shapes that do not match; an image with NaNs, values outside
                [0, 255], or a float image in [0, 1] (multiply by 255); probabilities with
                NaN/inf, values outside [0, 1] (logits: apply a softmax) or pixel sums other
                than 1 (apply a softmax or normalise). The message names the transform.
        """
        image, probs = self._check(image, probabilities)
        height, width, num_labels = probs.shape
        keep = None
        if self.min_label_probability is not None and num_labels > 2:
            peak = probs.reshape(-1, num_labels).max(axis=0)
            keep = peak >= self.min_label_probability
            if keep.sum() < 2:
                keep = np.zeros(num_labels, bool)
                keep[np.argsort(peak)[-2:]] = True
            if keep.all():
                keep = None
            else:
                probs = probs[..., keep]
                probs = probs / np.maximum(probs.sum(-1, keepdims=True), 1e-12)
        scale = self.scale
        if scale < 1.0:
            small = (max(1, round(height * scale)), max(1, round(width * scale)))
            image = _resize_image(image, small)
            probs = _resize_channels(probs, small)
            probs = probs / np.maximum(probs.sum(-1, keepdims=True), 1e-12)
        q = self._mean_field(image, probs)
        if scale < 1.0:
            q = _resize_channels(q, (height, width))
            q = q / np.maximum(q.sum(-1, keepdims=True), 1e-12)
        if keep is not None:
            full = np.zeros((height, width, num_labels), np.float32)
            full[..., keep] = q
            q = full
        return q

    __call__ = refine

    def _mean_field(self, image, probs):
        dcrf = _import_densecrf()
        height, width, num_labels = probs.shape
        ratio = self.scale
        unary = -np.log(np.clip(probs, self.unary_clip, 1.0))
        unary = np.ascontiguousarray(unary.transpose(2, 0, 1).reshape(num_labels, -1), np.float32)
        crf = dcrf.DenseCRF2D(width, height, num_labels)
        crf.setUnaryEnergy(unary)
        crf.addPairwiseGaussian(sxy=self.gaussian_sxy * ratio, compat=self.gaussian_compat)
        crf.addPairwiseBilateral(
            sxy=self.bilateral_sxy * ratio,
            srgb=self.bilateral_srgb,
            rgbim=np.array(image, dtype=np.uint8, order="C"),
            compat=self.bilateral_compat,
        )
        q = np.array(crf.inference(self.iterations), dtype=np.float32)
        return q.reshape(num_labels, height, width).transpose(1, 2, 0)

    def refine_batch(self, images, probabilities, num_workers=None, progress=False):
        """Refines many images in a process pool (one image per task).

        Args:
            images: sequence of uint8 (H, W, 3) arrays (sizes may differ).
            probabilities: sequence of (H, W, C) arrays, same order.
            num_workers: int or None. Overrides the instance setting; 1 runs
                in this process.
            progress: bool. Show a tqdm progress bar. Defaults to False.

        Returns:
            list of float32 (H, W, C) arrays.
        """
        images = list(images)
        probabilities = list(probabilities)
        if len(images) != len(probabilities):
            raise ValueError(
                f"refine_batch got {len(images)} images but {len(probabilities)} probability maps."
            )
        workers = num_workers or self.num_workers or default_num_workers()
        workers = max(1, min(int(workers), len(images)))
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(images), desc="dense CRF", unit="img")
        results = []
        try:
            if workers == 1:
                for image, probs in zip(images, probabilities):
                    results.append(self.refine(image, probs))
                    if bar is not None:
                        bar.update(1)
                return results
            with concurrent.futures.ProcessPoolExecutor(
                max_workers=workers, mp_context=_pool_context()
            ) as pool:
                for q in pool.map(_refine_task, [(self, im, p) for im, p in zip(images, probabilities)]):
                    results.append(q)
                    if bar is not None:
                        bar.update(1)
            return results
        finally:
            if bar is not None:
                bar.close()


def _refine_task(args):
    crf, image, probs = args
    return crf.refine(image, probs)
