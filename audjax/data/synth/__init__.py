"""SynthAU: a generated two-domain facial action unit data set in ADLD's list format.

The licensed sets of the paper (BP4D -> EmotioNet) cannot ship with the code, so every command
defaults to this one: procedural faces with the 68 iBUG landmarks, six AUs that move what FACS
says they move, and two domains that differ the way lab and in-the-wild photographs do. Faces are
drawn with OpenCV primitives in "face units" and projected to pixels by one pose function, so the
landmarks and the picture agree.

The modules, by job:

    face         the face model: the mean face, identities, AU displacement fields, AU
                 intensities and labels (per-domain rates, co-occurrence)
    drawing      drawing primitives: curves in face units, `Pose` (face units -> pixels), the
                 painter
    portrait     the renderer's person: body, hair, skin, AU lines, features, shading, occluders
    scene        the renderer's domains: pose, backdrop or clutter, camera
    image        one image: its plan (what fixes its landmarks) and `render`
    dataset      the data-set writer: `generate`, `ensure`, the splits' lists, synthau.json
    shift_probe  `domain_shift_check` (HOG + logistic regression probes) and `shift_table`

    from audjax.data import synth
    synth.ensure("/tmp/synthau")                   # 10,000 images, 200x200; kept if up to date
    synth.ensure("/tmp/synthau_small", image_size=72,
                 sizes={"source_train": 500, "target_train": 500})
    print(synth.shift_table(synth.domain_shift_check("/tmp/synthau")))
"""

from audjax.data.synth.dataset import DEFAULT_SIZES, VERSION, ensure, generate, load_params
from audjax.data.synth.face import (
    AU_RATES,
    MIDLINE_X,
    MIRROR_68,
    NEUTRAL_FACE,
    expression_landmarks,
    occurrence,
    random_identity,
    sample_intensities,
)
from audjax.data.synth.image import SPLITS, TARGET_SHIFTS, Sample, render
from audjax.data.synth.scene import raw_size
from audjax.data.synth.shift_probe import domain_shift_check, shift_table

__all__ = [
    "AU_RATES", "DEFAULT_SIZES", "MIDLINE_X", "MIRROR_68", "NEUTRAL_FACE", "SPLITS",
    "TARGET_SHIFTS", "VERSION", "Sample", "domain_shift_check", "ensure", "expression_landmarks",
    "generate", "load_params", "occurrence", "random_identity", "raw_size", "render",
    "sample_intensities", "shift_table",
]
