"""Test material for the face front end's benchmarks (docs/performance.md, "Face detection"):
large camera frames and a video made from the one real photo here and SynthAU faces, as there
is no real video on the dev box.

    python -m experiments.face_frames OUT

writes OUT/frames/*.png (1392x1040: docs/astronaut.jpg scaled to the frame's height, and SynthAU
lab faces scaled to 330-500 px) and OUT/pan.mp4 (640x360, 300 frames at 30 frames/s: the photo
panned and zoomed so that the face, 75-135 px, crosses the frame).
"""

import sys
from pathlib import Path

import cv2
import numpy as np

from audjax.data.synth.image import render

ASTRONAUT = Path(__file__).resolve().parents[1] / "docs" / "astronaut.jpg"
FRAME = (1392, 1040)


def centred(image, size, fill):
    out = np.empty((size[1], size[0], 3), np.uint8)
    out[:] = fill
    y, x = (size[1] - image.shape[0]) // 2, (size[0] - image.shape[1]) // 2
    out[y:y + image.shape[0], x:x + image.shape[1]] = image
    return out


def large_frames(count=8):
    photo = cv2.imread(str(ASTRONAUT))
    side = FRAME[1]
    yield "astronaut", centred(cv2.resize(photo, (side, side), interpolation=cv2.INTER_CUBIC),
                               FRAME, (90, 90, 90))
    for i in range(count - 1):
        face = render(0, "source_val", i, image_size=200).image
        scale = 2.0 + 1.0 * i / max(1, count - 2)
        face = cv2.resize(face, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
        yield f"synth{i}", centred(face, FRAME, face[0, 0])


def pan_frames(count=300, size=(640, 360)):
    photo = cv2.imread(str(ASTRONAUT))
    for t in range(count):
        u = t / (count - 1)
        zoom = 0.8 + 0.7 * u  # face box 75 -> 135 px
        x = 40 + 380 * u - 175 * zoom
        matrix = np.array([[zoom, 0, x], [0, zoom, 40 - 76 * zoom]], np.float64)
        yield cv2.warpAffine(photo, matrix, size, flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=(100, 100, 100))


def main(out):
    out = Path(out)
    (out / "frames").mkdir(parents=True, exist_ok=True)
    for name, image in large_frames():
        cv2.imwrite(str(out / "frames" / f"{name}.png"), image)
    video = cv2.VideoWriter(str(out / "pan.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 30, (640, 360))
    for image in pan_frames():
        video.write(image)
    video.release()
    print(f"{out}/frames: 8 frames at {FRAME[0]}x{FRAME[1]}; {out}/pan.mp4: 300 frames at 640x360")


if __name__ == "__main__":
    main(sys.argv[1])
