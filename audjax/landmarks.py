"""The 49-point landmark layout shared by the networks, the losses and the data code.

audjax uses the 68-point iBUG/dlib layout without the jaw (points 0-16) and without the two
inner-lip corners (60, 64), in order (docs/design.md §2). 0-based indices in the 49-point layout:

    brows 0-9, nose bridge 10-13, nose base 14-18, eye on the image's left 19-24,
    other eye 25-30, outer lip 31-42, inner lip 43-48.
"""

import numpy as np

NUM_LANDMARKS = 49

# Which of the 68 iBUG points make up the 49-point layout.
SELECT_49_FROM_68 = np.array([i for i in range(17, 68) if i not in (60, 64)], dtype=np.int64)

# Horizontal flip: after mirroring x, point i of the flipped face is point FLIP_PERM[i] of the
# original. Written 1-based as in ADLD's reflect_49.txt, converted to 0-based.
FLIP_PERM = np.array(
    [10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 11, 12, 13, 14, 19, 18, 17, 16, 15, 29, 28, 27, 26, 31,
     30, 23, 22, 21, 20, 25, 24, 38, 37, 36, 35, 34, 33, 32, 43, 42, 41, 40, 39, 46, 45, 44, 49,
     48, 47],
    dtype=np.int64,
) - 1

# The two eyes (six points each) in the 49-point layout; the inter-ocular distance is the
# distance between their centres.
LEFT_EYE = np.arange(19, 25)
RIGHT_EYE = np.arange(25, 31)

# The 68-point eyes, for code that works before the 68 -> 49 selection (alignment).
LEFT_EYE_68 = np.arange(36, 42)
RIGHT_EYE_68 = np.arange(42, 48)

# The AUs of the paper (BP4D -> EmotioNet), in label-column order.
AU_NAMES = ("AU1", "AU2", "AU4", "AU6", "AU12", "AU17")


def select_49(landmarks68):
    """(..., 68, 2) -> (..., 49, 2): drop the jaw and the inner-lip corners."""
    landmarks68 = np.asarray(landmarks68)
    if landmarks68.shape[-2] != 68:
        raise ValueError(f"expected 68 landmarks, got shape {landmarks68.shape}")
    return landmarks68[..., SELECT_49_FROM_68, :]


def flip_landmarks(landmarks, width):
    """Mirror (..., 49, 2) landmarks of an image `width` pixels wide and renumber them.

    Pixel centres sit at integer coordinates, so x maps to width - 1 - x, the same as
    `image[:, ::-1]` does to pixels.
    """
    landmarks = np.asarray(landmarks)
    flipped = landmarks[..., FLIP_PERM, :].copy()
    flipped[..., 0] = width - 1 - flipped[..., 0]
    return flipped
