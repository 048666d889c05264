"""How often a `min_face` search finds the full-resolution detection's boxes (docs/performance.md,
"Face detection"): 1392x1040 frames with one face at a random place, the astronaut photo at
700-1600 px and SynthAU lab faces scaled 1-3.4x.

    python -m experiments.face_agreement [COUNT] [MIN_FACE ...]

For each MIN_FACE (default 160 320) prints, over the faces of the full run (min_face 40) whose
box reaches MIN_FACE and that score 0.2 or more, how many boxes the scaled search finds
unchanged and the mean distance of the 68 points fitted in its box to the full run's.
"""

import sys
from pathlib import Path

import cv2
import numpy as np

from audjax.data import annotate
from audjax.data.synth.image import render

ASTRONAUT = Path(__file__).resolve().parents[1] / "docs" / "astronaut.jpg"
FRAME = (1392, 1040)


def frames(count, seed=0):
    rng = np.random.default_rng(seed)
    photo = cv2.imread(str(ASTRONAUT))
    for i in range(count):
        if i % 3 == 0:
            side = int(rng.uniform(700, 1600))
            face = cv2.resize(photo, (side, side), interpolation=cv2.INTER_CUBIC)
            fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        else:
            face = render(0, "source_val", i, image_size=200).image
            scale = rng.uniform(1.0, 3.4)
            face = cv2.resize(face, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
            fill = face[0, 0]
        face = face[:FRAME[1], :FRAME[0]]
        frame = np.empty((FRAME[1], FRAME[0], 3), np.uint8)
        frame[:] = fill
        y = int(rng.integers(0, FRAME[1] - face.shape[0] + 1))
        x = int(rng.integers(0, FRAME[0] - face.shape[1] + 1))
        frame[y:y + face.shape[0], x:x + face.shape[1]] = face
        yield frame


def overlap(a, b):
    w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    return max(0, w) * max(0, h) / (a[2] * a[3] + b[2] * b[3] - max(0, w) * max(0, h))


def main(count=48, min_faces=(160, 320)):
    results = {m: [] for m in min_faces}
    for frame in frames(count):
        reference = annotate.detect_faces(frame, 0.2)
        for min_face in min_faces:
            found = annotate.detect_faces(frame, 0.0, min_face)
            for face in reference:
                if face.box[2] < min_face:
                    continue
                best = max(found, key=lambda f, r=face: overlap(f.box, r.box), default=None)
                if best is None or overlap(best.box, face.box) < 0.3:
                    results[min_face].append((False, np.nan))
                    continue
                distance = np.linalg.norm(best.landmarks - face.landmarks, axis=1).mean()
                results[min_face].append((best.box == face.box, float(distance)))
    for min_face, rows in results.items():
        same = sum(s for s, _ in rows)
        distances = [d for _, d in rows if not np.isnan(d)]
        worst = max(distances, default=np.nan)
        print(f"min_face {min_face:g}: {len(rows)} faces, {same} boxes the same, "
              f"{len(rows) - len(distances)} not found; landmarks {np.mean(distances):.3f} px "
              f"from the full run's on average (largest {worst:.2f} px)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 48,
         tuple(float(v) for v in sys.argv[2:]) or (160, 320))
