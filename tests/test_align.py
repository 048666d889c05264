"""Face alignment (audjax.data.align) and the flip permutation it must agree with."""

import cv2
import numpy as np
import pytest

from audjax.data.align import align_face, alignment_matrix, transform_points
from audjax.landmarks import (
    FLIP_PERM,
    LEFT_EYE,
    LEFT_EYE_68,
    RIGHT_EYE,
    RIGHT_EYE_68,
    flip_landmarks,
    select_49,
)


def face68(cx=100.0, eye_y=80.0, unit=1.0):
    """A mirror-symmetric 68-point face in iBUG/dlib order, symmetric about x = cx.

    Written point by point from the iBUG numbering (0-based): jaw 0-16 from the image's left,
    brows 17-21 (left, outer to inner) and 22-26, nose bridge 27-30 downwards, nose base 31-35
    left to right, left eye 36-41 and right eye 42-47 clockwise from the left corner, outer lip
    48-59 and inner lip 60-67 clockwise from the left corner. Eye centres at (cx -+ 20u, eye_y),
    nose tip at (cx, eye_y + 24u), mouth corners at (cx -+ 18u, eye_y + 44u).
    """
    u = unit
    pts = np.zeros((68, 2))
    jaw_angles = np.linspace(np.pi, 0, 17)  # image left -> chin -> image right
    pts[0:17] = np.stack([cx + 46 * u * np.cos(jaw_angles),
                          eye_y + 5 * u + 62 * u * np.sin(jaw_angles)], 1)
    brow_x = np.array([38, 32, 25, 18, 9]) * u  # outer to inner
    brow_y = eye_y - np.array([10, 14, 15, 14, 12]) * u
    pts[17:22] = np.stack([cx - brow_x, brow_y], 1)
    pts[22:27] = np.stack([cx + brow_x[::-1], brow_y[::-1]], 1)
    pts[27:31] = np.stack([np.full(4, cx), eye_y + np.array([0, 8, 16, 24]) * u], 1)
    pts[31:36] = np.stack([cx + np.array([-8, -4, 0, 4, 8]) * u,
                           eye_y + np.array([28, 29, 30, 29, 28]) * u], 1)
    # One eye around (ex, eye_y), from the corner at -dx clockwise (y grows downwards).
    eye = np.array([[-8, 0], [-3, -4], [3, -4], [8, 0], [3, 4], [-3, 4]]) * u
    pts[36:42] = eye + [cx - 20 * u, eye_y]
    pts[42:48] = eye + [cx + 20 * u, eye_y]
    outer = np.array([[-18, 0], [-12, -5], [-5, -7], [0, -6], [5, -7], [12, -5],
                      [18, 0], [11, 7], [5, 9], [0, 9], [-5, 9], [-11, 7]]) * u
    inner = np.array([[-14, 0], [-6, -2], [0, -2], [6, -2], [14, 0], [6, 3], [0, 3],
                      [-6, 3]]) * u
    pts[48:60] = outer + [cx, eye_y + 44 * u]
    pts[60:68] = inner + [cx, eye_y + 44 * u]
    return pts


def similarity(angle_deg, scale, tx, ty):
    """A 2x3 similarity matrix: rotation about the origin by angle_deg, then scale, then shift."""
    a = np.deg2rad(angle_deg)
    return np.array([[scale * np.cos(a), -scale * np.sin(a), tx],
                     [scale * np.sin(a), scale * np.cos(a), ty]])


def blob_image(point, shape, sigma=1.5):
    """A float32 image holding one Gaussian blob centred on `point` (pixel centres at integers)."""
    ys, xs = np.mgrid[:shape[0], :shape[1]]
    return np.exp(-((xs - point[0]) ** 2 + (ys - point[1]) ** 2) / (2 * sigma ** 2)).astype(
        np.float32)


def centroid(image):
    weights = np.clip(image, 0, None)
    ys, xs = np.mgrid[:image.shape[0], :image.shape[1]]
    return np.array([(weights * xs).sum(), (weights * ys).sum()]) / weights.sum()


def eye_centres(points):
    return points[LEFT_EYE].mean(0), points[RIGHT_EYE].mean(0)


def test_upright_face_matches_the_formula():
    # For the upright face of face68 everything is known by hand: the anchors (eye centres,
    # nose tip, mouth corners) span 40u wide (eye centres at -+20u; the mouth corners at -+18u
    # are inside) and 44u high, so the enlarged side is 2.8 * 44u and the box centre sits at
    # (cx, eye_y + 22u).
    u, cx, eye_y = 1.7, 150.0, 120.0
    points = face68(cx, eye_y, u)
    scale = 199 / (2.8 * 44 * u)
    _, aligned = align_face(np.zeros((300, 300, 3), np.uint8), points)
    left, right = aligned[LEFT_EYE_68].mean(0), aligned[RIGHT_EYE_68].mean(0)
    np.testing.assert_allclose(left, [99.5 - 20 * u * scale, 99.5 - 22 * u * scale], atol=1e-4)
    np.testing.assert_allclose(right, [99.5 + 20 * u * scale, 99.5 - 22 * u * scale], atol=1e-4)
    np.testing.assert_allclose(aligned, (points - [cx, eye_y + 22 * u]) * scale + 99.5,
                               atol=1e-4)


@pytest.mark.parametrize("angle", [-35.0, 0.0, 17.0, 160.0])
def test_alignment_is_similarity_invariant(angle):
    # Moving, turning and scaling the source must not change the result, and the eyes must be
    # level with the eye on the image's left staying on the left.
    reference = alignment_matrix(face68())
    moved = transform_points(similarity(angle, 1.6, 40.0, -25.0), face68())
    aligned = transform_points(alignment_matrix(moved), moved)
    np.testing.assert_allclose(aligned, transform_points(reference, face68()), atol=1e-8)
    left, right = aligned[LEFT_EYE_68].mean(0), aligned[RIGHT_EYE_68].mean(0)
    assert abs(left[1] - right[1]) < 1e-8 and left[0] < right[0]


def test_box_uses_the_larger_side_and_box_enlarge():
    # Widen the eyes far apart: the width (eye centre to eye centre) becomes the larger side.
    points = face68()
    points[RIGHT_EYE_68] += [60, 0]  # eye centres now 100 apart, box height still 44
    for enlarge, size in [(2.8, 200), (2.0, 64)]:
        matrix = alignment_matrix(points, out_size=size, box_enlarge=enlarge)
        left, right = (transform_points(matrix, points)[eye].mean(0)
                       for eye in (LEFT_EYE_68, RIGHT_EYE_68))
        np.testing.assert_allclose(right[0] - left[0], 100 * (size - 1) / (enlarge * 100))
        # The box is centred: the eyes are the box's left and right edges.
        np.testing.assert_allclose((left[0] + right[0]) / 2, (size - 1) / 2)


def test_49_and_68_points_align_the_same():
    points = transform_points(similarity(12, 0.8, 30, 10), face68())
    image = np.random.default_rng(0).integers(0, 256, (240, 240, 3), np.uint8)
    image68, aligned68 = align_face(image, points)
    image49, aligned49 = align_face(image, select_49(points))
    assert aligned68.dtype == np.float32 and aligned49.shape == (49, 2)
    np.testing.assert_array_equal(image68, image49)
    np.testing.assert_allclose(select_49(aligned68), aligned49, atol=1e-4)


def test_pixels_follow_the_landmarks():
    # Each landmark gets a blob of its own in an otherwise black source, which is turned and
    # scaled into a bigger canvas; after alignment the blob's centroid must be where the aligned
    # landmark is (bilinear resampling keeps a symmetric blob's centroid to well under a pixel,
    # so any half-pixel mistake in the convention would show).
    source = transform_points(similarity(-23, 1.3, 60, 110), select_49(face68()))
    matrix = alignment_matrix(source, out_size=200)
    aligned = transform_points(matrix, source)
    for k in range(49):
        image = blob_image(source[k], (360, 360))
        warped, points = align_face(image, source)
        np.testing.assert_allclose(points[k], aligned[k], atol=1e-4)
        np.testing.assert_allclose(centroid(warped), aligned[k], atol=0.1)


def test_coloured_markers_land_on_their_points():
    # The same in uint8 BGR, as prepare runs it: a grey-background face with a coloured disc on
    # a few well separated points; the aligned landmark's pixel must carry the disc's colour.
    points = transform_points(similarity(28, 2.2, 210, 150), select_49(face68(0, 0)))
    image = np.full((420, 420, 3), 60, np.uint8)
    colours = {0: (0, 0, 255), 9: (0, 255, 0), 13: (255, 0, 0), 31: (0, 255, 255),
               37: (255, 0, 255), 19: (255, 255, 0), 28: (255, 255, 255)}
    for k, colour in colours.items():
        cv2.circle(image, tuple(int(round(c)) for c in points[k]), 5, colour, -1)
    aligned_image, aligned = align_face(image, points)
    for k, colour in colours.items():
        x, y = np.round(aligned[k]).astype(int)
        patch = aligned_image[y - 1:y + 2, x - 1:x + 2].astype(int)
        assert np.abs(patch - colour).max() < 40, (k, patch)


def test_border_is_grey():
    # The output spans 2.8 * 44 = 123 source pixels around the face, more than the 50x50 source.
    aligned, _ = align_face(np.zeros((50, 50, 3), np.uint8), face68(25, 20))
    assert (aligned[0, 0] == 128).all() and (aligned[-1, -1] == 128).all()


def test_degenerate_landmarks_raise():
    with pytest.raises(ValueError, match="eye centres coincide"):
        alignment_matrix(np.zeros((49, 2)))
    with pytest.raises(ValueError, match=r"\(49, 2\) or \(68, 2\)"):
        alignment_matrix(np.zeros((5, 2)))
    with pytest.raises(ValueError, match="finite"):
        alignment_matrix(np.full((68, 2), np.nan))


# ---------------------------------------------------------------------------------------------
# The flip permutation (audjax.landmarks), checked against the geometry of face68


def test_flip_perm_is_an_involution_that_swaps_left_and_right():
    np.testing.assert_array_equal(FLIP_PERM[FLIP_PERM], np.arange(49))
    assert sorted(FLIP_PERM[LEFT_EYE]) == list(RIGHT_EYE)
    assert sorted(FLIP_PERM[np.arange(5)]) == list(range(5, 10))  # brows
    assert FLIP_PERM[31] == 37 and FLIP_PERM[13] == 13  # mouth corners swap, nose tip stays


def test_flipping_a_symmetric_face_gives_it_back():
    # face68 is mirror-symmetric about x = (width - 1) / 2, so mirroring and renumbering must
    # reproduce every point; a wrong entry in FLIP_PERM would move some point across the face.
    width = 201
    points = select_49(face68(cx=(width - 1) / 2))
    np.testing.assert_allclose(flip_landmarks(points, width), points, atol=1e-12)


def test_flipped_aligned_image_keeps_blobs_on_their_points():
    source = transform_points(similarity(15, 1.1, 40, 60), select_49(face68()))
    for k in (0, 13, 19, 31, 45):
        warped, aligned = align_face(blob_image(source[k], (300, 300)), source)
        flipped_image = warped[:, ::-1]
        flipped = flip_landmarks(aligned, warped.shape[1])
        # Point k of the original is point FLIP_PERM[k] after the flip (an involution).
        np.testing.assert_allclose(centroid(flipped_image), flipped[FLIP_PERM[k]], atol=0.1)
        assert np.allclose(eye_centres(flipped)[0][1], eye_centres(flipped)[1][1], atol=1e-3)
