"""Decoding one aligned image and checking that it can be used with its landmarks.

The list checks (`audjax.data.lists.check_image_files`), the training and evaluation pipelines
(`audjax.data.pipeline`) and the guards that skip unusable images all decode through here, so
they agree on what "usable" means.
"""

import cv2
import numpy as np


def load_image(path: str) -> np.ndarray:
    """Decode an image file to an (H, W, 3) uint8 RGB array.

    The result is a view of OpenCV's BGR array with the channel axis reversed: the crop that
    follows and the copy into the batch then touch only the cropped pixels, once. (Pass it
    through np.ascontiguousarray before handing it back to OpenCV.)

    A missing file raises FileNotFoundError, an undecodable one ValueError; both name the file.
    """
    # np.fromfile + imdecode instead of cv2.imread: imread returns None for a missing file and a
    # corrupt one alike, and its error says nothing about which file it was.
    data = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None  # empty: cv2 asserts
    if image is None:
        raise ValueError(f"{path}: cannot decode image ({data.size} bytes)")
    return image[..., ::-1]


def read_sample(path: str, landmarks: np.ndarray, crop: int):
    """Decode an image and check it can be used with its landmarks and this crop
    (`sample_problem`). Returns (image, None) or (None, why it cannot)."""
    try:
        image = load_image(path)
    except OSError as e:  # missing, unreadable, a folder ...
        return None, e.strerror or str(e)
    except ValueError:
        return None, "cannot decode image"
    problem = sample_problem(image.shape, landmarks, crop)
    return (None, problem) if problem else (image, None)


def sample_problem(image_shape, landmarks, crop=None):
    """Why an image of `image_shape` (H, W, ...) with (L, 2) `landmarks` cannot be used, or None.

    It must be at least crop x crop (when `crop` is given), and its landmarks must lie on it,
    give or take a quarter of its size: an aligned face keeps them near or inside its image
    (an extreme pose may put a point just off the edge; L_l clips, L_fl does not mind), so a
    point far off it means the list's coordinates are not the aligned image's pixels (e.g. those
    of the raw photo).

    >>> sample_problem((200, 200, 3), np.array([[10.0, -20.0]]), crop=176) is None
    True
    >>> sample_problem((100, 120, 3), np.array([[10.0, 20.0]]), crop=176)
    'the 120x100 image is smaller than the 176x176 crop'
    >>> sample_problem((100, 120, 3), np.array([[10.0, 150.0]]))
    'landmark 1 (10, 150) lies far outside the 120x100 image: not its pixels?'
    """
    height, width = image_shape[:2]
    if crop is not None and (height < crop or width < crop):
        return f"the {width}x{height} image is smaller than the {crop}x{crop} crop"
    x, y = landmarks[:, 0], landmarks[:, 1]
    mx, my = width / 4, height / 4
    outside = ~((x >= -mx) & (x <= width + mx) & (y >= -my) & (y <= height + my))
    if outside.any():
        j = int(np.argmax(outside))
        return (f"landmark {j + 1} ({x[j]:g}, {y[j]:g}) lies far outside the {width}x{height} "
                "image: not its pixels?")
    return None
