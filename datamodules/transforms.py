"""Albumentations pipelines for the 2-D slice datasets (Synapse first).

Synapse training augmentation (CSWin-UNet / TransUNet ``RandomGenerator``,
written from the specification in ``shared/papers/cswin_unet.md`` §3.1)::

    with probability 0.5:   rot90 by k ~ U{0,1,2,3}, then a flip along an axis
                            drawn uniformly from {0 (rows), 1 (columns)}
                            (the flip is always applied in this branch)
    otherwise, with p 0.5:  rotation by an integer angle ~ U{-20, ..., 19} degrees
    (0.25 overall)          (like ``randint(-20, 20)``) about the image centre,
                            nearest-neighbour (order 0) for image AND label,
                            zero fill, same output size (no reshape)
    otherwise (0.25):       nothing
    then:                   resize to S x S if the shape differs
                            (image cubic, label nearest)

Implementation notes and the (small) deviations from the official code:

* The branch probabilities are reproduced with ``A.OneOf`` weights
  0.5 / 0.25 / 0.25 (rot-flip / rotate / no-op). The random *streams* differ from
  the official ``np.random``/``random`` calls, so individual draws are not
  bit-identical to an official run; the distribution is the same.
* Rotation uses OpenCV ``warpAffine`` (through :class:`IntegerAngleRotate`, a
  subclass of ``A.Rotate`` that draws integer angles in ``[low, high)``) instead
  of ``scipy.ndimage.rotate(order=0, reshape=False)``. Same centre
  ((W-1)/2, (H-1)/2), same direction and zero fill; OpenCV's 1/32-pixel
  fixed-point coordinates make about 0.2 % of the pixels of a 512 x 512 slice
  differ, almost all of them on the border of the rotated field of view.
* Resizing: the default ``resize_backend="scipy"`` calls
  ``scipy.ndimage.zoom`` (order 3 for the image, order 0 for the label, default
  grid mode), exactly the official resize, wrapped in an albumentations
  transform (:class:`ZoomResize`). ``resize_backend="opencv"`` uses
  ``A.Resize`` (OpenCV bicubic / nearest): about 20x faster, but its pixel grid
  is aligned differently (half-pixel centres) and its cubic kernel is Keys'
  convolution rather than a cubic B-spline, so it is not the official resize.
  Neither backend clips the cubic overshoot (the official code does not either).

Randomness: the transforms never touch the global ``random``/``numpy`` state.
:func:`reseed` gives a pipeline one fresh shared ``numpy.random.Generator`` and
``random.Random`` stream (``Compose.set_random_state``), so the augmentation of
a sample is a pure function of the seed passed. (``Compose.set_random_seed``
is avoided on purpose: it seeds every child transform with the *same* seed,
so their draws coincide: the branch choice and the flip-axis choice would use
the same first uniform, and the rot-flip branch would always flip along axis 0.)
"""
from __future__ import annotations

import random
from typing import Any, Literal

import albumentations as A
import cv2
import numpy as np
from albumentations.augmentations.geometric import functional as fgeometric
from albumentations.core.transforms_interface import DualTransform
from scipy import ndimage

__all__ = [
    "IntegerAngleRotate",
    "ZoomResize",
    "ResizeBackend",
    "make_resize",
    "synapse_train_transform",
    "resize_transform",
    "reseed",
    "item_seed",
    "CONVFORMER_GAMMAS",
    "DiscreteGamma",
    "convformer_train_transform",
]

ResizeBackend = Literal["scipy", "opencv"]


class IntegerAngleRotate(A.Rotate):
    """``A.Rotate`` drawing an integer angle uniformly from ``[limit[0], limit[1])``.

    This is ``np.random.randint(low, high)`` semantics (``high`` excluded), as in
    the official ``random_rotate``; ``A.Rotate`` itself draws a real angle from
    the closed interval. Everything else (centre, direction, interpolation,
    border handling) is ``A.Rotate``'s. ``crop_border`` must stay False.
    """

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        if self.crop_border:
            raise ValueError("IntegerAngleRotate does not support crop_border=True")
        low, high = int(round(self.limit[0])), int(round(self.limit[1]))
        angle = float(self.py_random.randrange(low, high)) if high > low else float(low)
        shape = params["shape"][:2]
        no_translate = {"x": 0, "y": 0}
        no_shear = {"x": 0.0, "y": 0.0}
        unit_scale = {"x": 1.0, "y": 1.0}
        matrix = fgeometric.create_affine_transformation_matrix(
            no_translate, no_shear, unit_scale, angle, fgeometric.center(shape)
        )
        bbox_matrix = fgeometric.create_affine_transformation_matrix(
            no_translate, no_shear, unit_scale, angle, fgeometric.center_bbox(shape)
        )
        return {
            "x_min": -1,
            "x_max": -1,
            "y_min": -1,
            "y_max": -1,
            "matrix": matrix,
            "bbox_matrix": bbox_matrix,
            "angle": angle,
        }


class ZoomResize(DualTransform):
    """Resize with ``scipy.ndimage.zoom``: image spline order 3 (cubic), mask order 0.

    A no-op when the input already has the target size (the official code only
    zooms when the shape differs). Works on ``(H, W)`` and ``(H, W, C)`` arrays;
    the output keeps the input dtype.
    """

    def __init__(self, height: int, width: int, image_order: int = 3, mask_order: int = 0, p: float = 1.0):
        super().__init__(p=p)
        self.height = int(height)
        self.width = int(width)
        self.image_order = int(image_order)
        self.mask_order = int(mask_order)

    def _zoom(self, arr: np.ndarray, order: int) -> np.ndarray:
        h, w = arr.shape[:2]
        if (h, w) == (self.height, self.width):
            return arr
        factors = (self.height / h, self.width / w) + (1.0,) * (arr.ndim - 2)
        out = ndimage.zoom(arr, factors, order=order)
        if out.shape[:2] != (self.height, self.width):  # guard against rounding of h * factor
            raise RuntimeError(f"zoom produced shape {out.shape}, expected {(self.height, self.width)}")
        return out

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        return self._zoom(img, self.image_order)

    def apply_to_mask(self, mask: np.ndarray, **params: Any) -> np.ndarray:
        return self._zoom(mask, self.mask_order)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("height", "width", "image_order", "mask_order")


def make_resize(img_size: int, resize_backend: ResizeBackend = "scipy") -> A.BasicTransform:
    """The plain resize to ``img_size x img_size`` (image cubic, label nearest)."""
    if resize_backend == "scipy":
        return ZoomResize(img_size, img_size, p=1.0)
    if resize_backend == "opencv":
        return A.Resize(
            img_size, img_size, interpolation=cv2.INTER_CUBIC, mask_interpolation=cv2.INTER_NEAREST, p=1.0
        )
    raise ValueError(f"resize_backend must be 'scipy' or 'opencv', got {resize_backend!r}")


def synapse_train_transform(
    img_size: int = 224,
    *,
    resize_backend: ResizeBackend = "scipy",
    max_angle: int = 20,
) -> A.Compose:
    """The official Synapse training augmentation (module docstring), then the resize.

    Call as ``t(image=float32 (H, W), mask=uint8 (H, W))``; returns the dict with
    ``image`` / ``mask`` of shape ``(img_size, img_size)``. Seed it per sample with
    :func:`reseed`.
    """
    rot_flip = A.Sequential(
        [
            A.RandomRotate90(p=1.0),  # k ~ U{0, 1, 2, 3}, np.rot90 direction
            A.OneOf([A.VerticalFlip(p=1.0), A.HorizontalFlip(p=1.0)], p=1.0),  # axis 0 / axis 1
        ],
        p=0.5,  # OneOf weight
    )
    rotate = IntegerAngleRotate(
        limit=(-max_angle, max_angle),
        interpolation=cv2.INTER_NEAREST,
        mask_interpolation=cv2.INTER_NEAREST,
        border_mode=cv2.BORDER_CONSTANT,
        fill=0,
        fill_mask=0,
        crop_border=False,
        p=0.25,  # OneOf weight
    )
    return A.Compose(
        [
            A.OneOf([rot_flip, rotate, A.NoOp(p=0.25)], p=1.0),
            make_resize(img_size, resize_backend),
        ],
        p=1.0,
    )


def resize_transform(img_size: int = 224, *, resize_backend: ResizeBackend = "scipy") -> A.Compose:
    """No augmentation, only the resize (validation slices). Deterministic."""
    return A.Compose([make_resize(img_size, resize_backend)], p=1.0)


def item_seed(*keys: int) -> int:
    """A 64-bit seed that is a pure function of the non-negative integers ``keys``.

    Uses ``numpy.random.SeedSequence`` hashing, so nearby keys give unrelated
    streams, e.g. ``item_seed(seed, epoch, index)``.
    """
    if any(int(k) < 0 for k in keys):
        raise ValueError(f"seed keys must be non-negative integers, got {keys}")
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(2, dtype=np.uint32)
    return int(state[0]) | (int(state[1]) << 32)


def reseed(transform: A.BaseCompose, seed: int) -> None:
    """Give ``transform`` (and all its children) one fresh random stream seeded by ``seed``."""
    transform.set_random_state(np.random.default_rng(seed), random.Random(seed))


# ----------------------------------------------------------------------------- ConvFormer (PNG data sets)

#: The release's gamma values: 1.0, 1.1, ..., 2.4 (``shared/papers/convformer.md`` §3).
CONVFORMER_GAMMAS: tuple[float, ...] = tuple(round(1.0 + 0.1 * k, 1) for k in range(15))


class DiscreteGamma(A.ImageOnlyTransform):
    """Gamma on uint8 images with ``γ`` drawn uniformly from ``gammas``: ``out = ⌊255 · (x/255)^(1/γ)⌋``.

    ``1/γ`` (γ ≥ 1 brightens) and the truncation back to uint8 are our reading where
    the specification names only "gamma, γ in {1.0, ..., 2.4}".
    """

    def __init__(self, gammas: tuple[float, ...] = CONVFORMER_GAMMAS, p: float = 0.5):
        super().__init__(p=p)
        if not gammas or min(gammas) <= 0:
            raise ValueError(f"gammas must be positive, got {gammas}")
        self.gammas = tuple(float(g) for g in gammas)

    def get_params(self) -> dict[str, Any]:
        return {"gamma": self.gammas[self.py_random.randrange(len(self.gammas))]}

    def apply(self, img: np.ndarray, gamma: float = 1.0, **params: Any) -> np.ndarray:
        if img.dtype != np.uint8:
            raise TypeError(f"DiscreteGamma expects uint8 images, got {img.dtype}")
        lut = np.floor(255.0 * (np.arange(256) / 255.0) ** (1.0 / gamma)).astype(np.uint8)
        return lut[img]

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("gammas",)


def convformer_train_transform(img_size: int = 256, *, random_crop: bool = False) -> A.Compose:
    """The ConvFormer release's training augmentation (``shared/papers/convformer.md`` §3), in its order.

    Call as ``t(image=uint8 (S, S) or (S, S, 3), mask=uint8 (S, S))``; returns the
    same shapes and dtypes (``S = img_size``). Seed it per sample with :func:`reseed`::

        p 0.5   gamma, γ uniform in {1.0, 1.1, ..., 2.4} (:class:`DiscreteGamma`)
        always  random crop S x S (ACDC/ICH: ``random_crop=True``; a no-op on S x S input)
        p 0.5   rotation by an angle uniform in [-30°, 30°] about the centre
        p 0.5   scale by s uniform in [1, 1.3] (size ⌊s·S⌋), then a random S x S crop
        p 0.5   contrast factor uniform in [0.8, 2.0] (torchvision's rule: blend with
                the mean gray level)
        no flips, noise or elastic distortion (p = 0 in the release)

    Our choices where the specification is silent: rotation nearest-neighbour for
    image and label with zero fill (torchvision's defaults on PIL images), bilinear
    image / nearest label for the scaling, all on uint8 (as the release's PIL
    pipeline) with ToTensor's /255 afterwards.
    """
    size = int(img_size)
    steps: list[A.BasicTransform | A.BaseCompose] = [DiscreteGamma(CONVFORMER_GAMMAS, p=0.5)]
    if random_crop:
        steps.append(A.RandomCrop(size, size, p=1.0))
    steps += [
        A.Rotate(limit=(-30, 30), interpolation=cv2.INTER_NEAREST, mask_interpolation=cv2.INTER_NEAREST,
                 border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0, crop_border=False, p=0.5),
        A.Sequential([
            A.RandomScale(scale_limit=(0.0, 0.3), interpolation=cv2.INTER_LINEAR,
                          mask_interpolation=cv2.INTER_NEAREST, p=1.0),
            A.RandomCrop(size, size, p=1.0),
        ], p=0.5),
        A.ColorJitter(brightness=(1.0, 1.0), contrast=(0.8, 2.0), saturation=(1.0, 1.0), hue=(0.0, 0.0), p=0.5),
    ]
    return A.Compose(steps, p=1.0)
