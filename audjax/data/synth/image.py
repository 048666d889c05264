"""One SynthAU image: its plan (identity, AU intensities, landmarks, pose) and its rendering.

Every image draws its randomness from `SeedSequence(seed, spawn_key=(split, index))`, so it is a
pure function of (seed, split, index, image size, target shift). Source images show one of 41
subjects, split subject-exclusively (`SOURCE_SUBJECTS`); every target image shows a new person
and, with the full shift, on some images glasses, a hand or a fringe of hair over the face.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from audjax.data.synth.drawing import Painter, Pose
from audjax.data.synth.face import (
    Identity,
    expression_landmarks,
    occurrence,
    random_identity,
    sample_intensities,
)
from audjax.data.synth.portrait import draw_face, draw_occluders
from audjax.data.synth.scene import BACKDROP, add_noise, clutter, raw_size, sample_pose, wild_camera

SPLITS = ("source_train", "source_val", "source_test", "target_train", "target_val", "target_test")

# What sets the target domain apart (`generate`'s target_shift): "full" is everything the target
# domain has (`audjax.data.synth.scene`'s pose, background and camera, and the occluders);
# "appearance" keeps the source's pose (near-frontal, centred) and draws no occluders, so the
# target differs only in identity, AU rates, background and camera (light, colour, blur, noise,
# JPEG): the texture-like shift that a landmark/background separation can factor out.
TARGET_SHIFTS = ("full", "appearance")


def _domain(split: str) -> str:
    return split.split("_")[0]


# BP4D-like source: 41 subjects, each in one split only (subject-exclusive, as BP4D protocols).
SOURCE_SUBJECTS = {"source_train": range(0, 27), "source_val": range(27, 32),
                   "source_test": range(32, 41)}


@dataclass(frozen=True)
class Sample:
    """One raw SynthAU image with its ground truth."""

    image: np.ndarray  # (R, R, 3) uint8 BGR, R = raw_size(image_size)
    landmarks: np.ndarray  # (68, 2) float32, raw-image pixels
    intensity: np.ndarray  # (K,) float32 AU intensities in [0, 1]
    labels: np.ndarray  # (K,) int32 occurrence (true labels, also for the unlabelled split)


@functools.lru_cache(maxsize=64)
def subject_identity(seed: int, subject: int) -> Identity:
    """The source domain's subject `subject`: the same person in every image of that subject."""
    key = (len(SPLITS), subject)  # a spawn key no image uses
    return random_identity(np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key)))


@dataclass(frozen=True)
class ImagePlan:
    """Everything about an image that fixes its landmarks; `rng` continues with the rest."""

    rng: np.random.Generator
    identity: Identity
    intensity: np.ndarray
    landmarks: np.ndarray  # (68, 2) face units
    pose: Pose


def plan_image(seed: int, split: str, index: int, image_size: int,
               shift: str = "full") -> ImagePlan:
    """The identity, AU intensities, landmarks and pose of image `index` of `split`: cheap (no
    drawing), and what `render` draws."""
    key = (SPLITS.index(split), index)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))
    domain = _domain(split)
    if domain == "source":
        ident = subject_identity(seed, int(rng.choice(SOURCE_SUBJECTS[split])))
    else:
        ident = random_identity(rng)
    intensity = sample_intensities(rng, domain, 1)[0]
    talking = rng.uniform() < (0.2 if domain == "source" else 0.3)
    lm = expression_landmarks(ident.shape, intensity, rng.uniform(0.005, 0.045) if talking else 0)
    pose_domain = "source" if shift == "appearance" else domain
    return ImagePlan(rng, ident, intensity, lm, sample_pose(rng, pose_domain, image_size))


def render(seed: int, split: str, index: int, image_size: int = 200,
           shift: str = "full") -> Sample:
    """Image `index` of `split`: a pure function of its arguments (its own random stream)."""
    plan = plan_image(seed, split, index, image_size, shift)
    rng, ident, lm = plan.rng, plan.identity, plan.landmarks
    size = raw_size(image_size)
    if _domain(split) == "source":
        image = np.empty((size, size, 3), np.uint8)
        image[:] = BACKDROP
    else:
        image = clutter(rng, size)
    p = Painter(image, plan.pose)
    draw_face(p, ident, lm, plan.intensity, rng)
    if _domain(split) == "source":
        image = add_noise(image, 1.5, rng)
    else:
        if shift == "full":
            draw_occluders(p, ident, lm, rng)
        image = wild_camera(image, rng)
    return Sample(image=image, landmarks=plan.pose.project(lm).astype(np.float32),
                  intensity=plan.intensity, labels=occurrence(plan.intensity))

