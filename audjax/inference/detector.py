"""AU detection with a trained model, on photos, videos and arrays: `audjax.Detector`.

    from audjax import Detector

    detector = Detector.from_run("runs/quickstart/joint")      # the run's best checkpoint
    rows = detector.detect(["photo.jpg", "clip.mp4", "folder/"])  # one dict per face
    table = detector.detect("photo.jpg", as_frame=True)          # a pandas DataFrame

Each face goes through the steps its training data went through:

1. dlib finds every face of `min_face` px and up and its 68 points (`annotate.detect_faces`;
   faces scoring below `min_face_score` are dropped); in videos faces are followed from frame to
   frame and keep their `face_id` (`audjax.inference.tracking`; `track=False` detects in every
   frame). Decoding, detection and alignment run in `workers` processes
   (`audjax.inference.frontend`);
2. `align.align_face` maps it to the run's aligned size (`aligned_size`: 200 for crop 176);
3. the centre crop of evaluation (`pipeline.centre_offset`), scaled to [-1, 1];
4. the jitted prediction path, in batches of `batch_size` (the last one padded, so it compiles
   once): the target path E_au(G_st(E_l(F), G_b(F))) by default, the source path E_au(F) with
   `path="source"` (lab-like faces); F = E_f(image);
5. landmarks in crop pixels, moved by the crop's offset and mapped back through the inverse of
   the alignment into the input image's pixels.

With `aligned=True` steps 1-2 are skipped: every input is one face already aligned as the
training images were, and gives exactly the probabilities evaluation gives.

Rows use OpenFace's and py-feat's names: `input`, `frame` (0-based; 0 for a photo), `timestamp`
(seconds, videos; NaN for a photo), `face_id` (0 = the most confident face; in a tracked video
the face's number), `face_x`, `face_y`, `face_width`, `face_height` (dlib's box, or the box
derived from a tracked face's landmarks), `face_score` (dlib's confidence, at a tracked face's
latest detection), `success` (1 when a face was found and scored), one probability column per
AU of the run (`AU1` -> `AU01`), `AU01_c` ... (1 when the probability reaches `threshold`), and
the 49 landmarks `x_0` ... `x_48`, `y_0` ... `y_48` in the input's pixels. A photo or frame
without a face gives one row with success 0 and NaN values. Columns a model cannot fill are
absent: phase-1 checkpoints (the landmark net) have no AU columns, source-only models no
landmark columns.

Landmarks come from the landmark head (phase 1, models B and C); a model without one (A) reads
them off E_l's attention maps (`audjax.inference.paths.attention_landmarks`).
"""

from __future__ import annotations

import functools
import math
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

import jax
import numpy as np

from audjax import checkpoints
from audjax import state as state_lib
from audjax.config import Config
from audjax.data import align, annotate
from audjax.inference import frontend, media
from audjax.inference.frontend import FaceCrop
from audjax.inference.paths import PATHS, predict_batch

# The networks prediction may use; a checkpoint's own (state.network_names) restricts them.
PREDICTION_NETWORKS = ("landmark_net", "E_f", "landmark", "E_l", "G_b", "G_st", "E_au")

META_COLUMNS = ("input", "frame", "timestamp", "face_id", "face_x", "face_y", "face_width",
                "face_height", "face_score", "success")

def au_column(name: str) -> str:
    """An AU's column name as OpenFace and py-feat write it.

    >>> au_column("AU1"), au_column("AU12"), au_column("smile")
    ('AU01', 'AU12', 'smile')
    """
    match = re.fullmatch(r"AU(\d+)", name.strip(), flags=re.IGNORECASE)
    return f"AU{int(match.group(1)):02d}" if match else name.strip()


def aligned_size(config: Config) -> int:
    """The side of the run's aligned training images: the recorded --aligned_size, else (runs
    made before it was recorded) SynthAU's --synth_image_size for a run without --data_root,
    else 200, `audjax.data.prepare`'s default."""
    if config.aligned_size:
        return config.aligned_size
    return 200 if config.data_root else config.synth_image_size


@dataclass
class FrameResult:
    """What `Detector.stream` yields: one frame (`media.Frame`: its image, or why it could not
    be read) and its rows (none when it could not be read)."""

    frame: media.Frame
    rows: list[dict]
    seconds: dict = field(default_factory=dict)  # the front end's time per stage (STAGES)


def _resolve_device(device):
    if device is None or isinstance(device, jax.Device):
        return device or jax.devices()[0]
    try:
        return jax.devices(device)[0]
    except RuntimeError as e:
        raise ValueError(f"device {device!r} is not available (JAX has "
                         f"{sorted({d.platform for d in jax.devices()})})") from e


class Detector:
    """AU probabilities and landmarks of every face in photos, videos and arrays (module doc)."""

    def __init__(self, config: Config, phase: str, params: dict, batch_stats: dict, *,
                 batch_size: int = 32, threshold: float = 0.5, path: str = "target",
                 device=None, min_face_score: float = 0.2, min_face: float = annotate.MIN_FACE,
                 track: bool = True, detect_every: int = 10, workers: int = 1,
                 checkpoint: str | None = None):
        """A detector over given weights; `Detector.from_run` reads them from a checkpoint.

        Args:
          config: the run's configuration (the networks are built from it).
          phase: "pretrain" (landmarks only) or "joint".
          params, batch_stats: per network name, at least those prediction uses.
          batch_size: faces per network call; every call has this many (the last padded).
          threshold: probability at which an AU counts as present (the `_c` columns).
          path: "target" (in-the-wild faces, the default) or "source" (lab-like faces).
          device: a jax.Device or a platform name ("cpu", "gpu"); default JAX's first device.
          min_face_score: dlib detections scoring below this are not faces (dlib's own cut-off
            is 0; 0.2 drops weak false detections such as patterns on clothes and keeps real
            faces dlib scores low: docs/performance.md, "Face detection").
          min_face: the smallest face to find, in pixels (`annotate.detect_faces`).
          track: in videos, follow faces from frame to frame (`audjax.inference.tracking`);
            False detects them in every frame.
          detect_every: when tracking, run the detector at least every this many frames.
          workers: processes for decoding, face detection and alignment (`frontend.stream`;
            1: in this process). More than one are started with "spawn": a script must then
            create and use the detector under `if __name__ == "__main__":`.
          checkpoint: where the weights came from (for messages).
        """
        if path not in PATHS:
            raise ValueError(f"path={path!r}: expected one of {PATHS}")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: must be at least 1")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold={threshold}: must be in [0, 1]")
        self.config, self.phase, self.path = config, phase, path
        self.batch_size, self.threshold, self.min_face_score = batch_size, threshold, min_face_score
        self.checkpoint = checkpoint
        if workers < 1:
            raise ValueError(f"workers={workers}: must be at least 1")
        self.min_face, self.track, self.detect_every = min_face, track, detect_every
        self.workers = workers
        self.networks = prediction_networks(config, phase)
        self.aligned_size = aligned_size(config)
        if self.aligned_size < config.crop:
            raise ValueError(f"aligned size {self.aligned_size} is smaller than the crop "
                             f"{config.crop}")
        self.device = _resolve_device(device)
        self.params = jax.device_put({n: params[n] for n in self.networks}, self.device)
        self.batch_stats = jax.device_put(
            {n: batch_stats[n] for n in self.networks if n in batch_stats}, self.device)
        self.nets = state_lib.build_networks(config, len(config.au_names))
        self._predict = jax.jit(functools.partial(predict_batch, config, self.nets,
                                                  self.networks, path))
        self.au_columns = (tuple(au_column(a) for a in config.au_names)
                           if "E_au" in self.networks else ())
        has_landmarks = bool({"landmark_net", "landmark", "E_l"} & set(self.networks))
        self.num_landmarks = config.num_landmarks if has_landmarks else 0

    @classmethod
    def from_run(cls, run, **kwargs) -> Detector:
        """A detector from a run directory (its best checkpoint), a manager directory
        (`RUN/checkpoints`, its latest step) or a step directory; relative paths work. Only the
        networks prediction needs are read (no optimizer state, discriminators or data lists).
        Keyword arguments go to `Detector(...)`."""
        step_dir = checkpoints.resolve_checkpoint(run)
        config = Config.from_dict(checkpoints.read_checkpoint_config(step_dir))
        names = prediction_networks(config, config.phase)
        nets = state_lib.build_networks(config, len(config.au_names))
        # Shapes only: eval_shape traces the initialisers without running them.
        params, batch_stats = jax.eval_shape(
            lambda: state_lib.init_variables(config, nets, names, jax.random.PRNGKey(0)))
        restored = checkpoints.restore_subtrees(
            step_dir, {"params": params, "batch_stats": batch_stats})
        return cls(config, config.phase, restored["params"], restored["batch_stats"],
                   checkpoint=str(step_dir), **kwargs)

    # -- columns -----------------------------------------------------------------------------

    @property
    def columns(self) -> list[str]:
        """The row keys, in order (the CSV header)."""
        return (list(META_COLUMNS) + list(self.au_columns) + [c + "_c" for c in self.au_columns]
                + [f"x_{i}" for i in range(self.num_landmarks)]
                + [f"y_{i}" for i in range(self.num_landmarks)])

    # -- the network part ----------------------------------------------------------------------

    def predict_crops(self, crops: np.ndarray) -> dict[str, np.ndarray]:
        """The networks on (N, S, S, 3) crops in [-1, 1]: "probs" (N, K) and/or "landmarks"
        (N, L, 2) in crop pixels."""
        return _collect(self._dispatch(crops), len(crops))

    def _dispatch(self, crops: np.ndarray) -> list[dict]:
        """Start the network on `crops` in full batches; returns the (not yet computed) device
        arrays, so that the caller can prepare more faces meanwhile."""
        n, b = len(crops), self.batch_size
        out = []
        for start in range(0, n, b):
            batch = crops[start:start + b]
            if len(batch) < b:  # pad: one compiled shape for every call
                batch = np.concatenate([batch, np.repeat(batch[-1:], b - len(batch), axis=0)])
            out.append(self._predict(self.params, self.batch_stats, batch))
        return out

    # -- faces -------------------------------------------------------------------------------

    def front_end(self, aligned: bool = False) -> frontend.FrontEnd:
        """The settings of the host side (`audjax.inference.frontend`)."""
        return frontend.FrontEnd(self.config.crop, self.aligned_size, self.min_face,
                                 self.min_face_score, self.track, self.detect_every, aligned)

    def faces(self, image_bgr: np.ndarray, aligned: bool = False) -> list[FaceCrop]:
        """The faces of one HxWx3 uint8 BGR image, aligned and cropped for the networks.

        Raises ValueError for an aligned input smaller than the crop, ImportError (naming the
        'annotate' extra) when faces must be found and dlib is missing."""
        return self.front_end(aligned).faces(image_bgr)

    # -- detection -----------------------------------------------------------------------------

    def stream(self, inputs, *, aligned: bool = False, every: int = 1) -> Iterator[FrameResult]:
        """A `FrameResult` per image or video frame of `inputs`, in order (see `detect`).

        Faces are gathered until a batch is full; while the network works on one batch (JAX
        dispatches asynchronously) the faces of the next are found and aligned, in `workers`
        processes when there are several.
        """
        chunk, num_faces, running = [], 0, None
        for frame, faces, seconds in frontend.stream(self.front_end(aligned), inputs,
                                                     every=every, workers=self.workers):
            chunk.append((frame, faces, seconds))
            num_faces += len(faces)
            if num_faces >= self.batch_size or len(chunk) >= self.batch_size:
                if running is not None:
                    yield from self._finish(*running)
                running = (chunk, self._dispatch(_crops(chunk)))
                chunk, num_faces = [], 0
        if running is not None:
            yield from self._finish(*running)
        if chunk:
            yield from self._finish(chunk, self._dispatch(_crops(chunk)))

    def detect(self, inputs, *, aligned: bool = False, every: int = 1, as_frame: bool = False,
               on_error: str = "raise"):
        """One row per face of `inputs` (module doc).

        Args:
          inputs: a path or an HxWx3 uint8 RGB array, or a list of them; a path names an image,
            a video or a folder (searched recursively for both).
          aligned: every input is one face already aligned as the training images were.
          every: in videos, keep every k-th frame (0, k, 2k, ...).
          as_frame: return a pandas DataFrame (needs pandas: `pip install 'audjax[pandas]'`).
          on_error: an input that cannot be read raises ValueError ("raise") or is skipped with
            a warning ("warn").

        Returns:
          A list of dicts with the keys `columns`, or a DataFrame with those columns.
        """
        if on_error not in ("raise", "warn"):
            raise ValueError(f"on_error={on_error!r}: expected 'raise' or 'warn'")
        if as_frame:
            pandas = _import_pandas()
        rows = []
        for result in self.stream(inputs, aligned=aligned, every=every):
            if result.frame.error is not None:
                message = f"{result.frame.input}: {result.frame.error}"
                if on_error == "raise":
                    raise ValueError(message)
                warnings.warn(message, stacklevel=2)
            rows.extend(result.rows)
        return pandas.DataFrame(rows, columns=self.columns) if as_frame else rows

    def _finish(self, chunk, dispatched) -> Iterator[FrameResult]:
        predictions = _collect(dispatched,
                               sum(f.crop is not None for _, fs, _ in chunk for f in fs))
        k = 0
        for frame, faces, seconds in chunk:
            rows = []
            if frame.error is None:
                if not faces:
                    rows.append(self._row(frame, 0, None, {}))
                for face in faces:
                    pred = {}
                    if face.crop is not None:
                        pred = {name: v[k] for name, v in predictions.items()}
                        k += 1
                    rows.append(self._row(frame, face.face_id, face, pred))
            yield FrameResult(frame, rows, seconds)

    def _row(self, frame: media.Frame, face_id: int, face: FaceCrop | None, pred: dict) -> dict:
        nan = math.nan
        box = face.box if face is not None else (nan,) * 4
        row = {"input": frame.input, "frame": frame.frame, "timestamp": frame.timestamp,
               "face_id": face_id, "face_x": box[0], "face_y": box[1], "face_width": box[2],
               "face_height": box[3], "face_score": face.score if face is not None else nan,
               "success": int(bool(pred))}
        probs = pred.get("probs", np.full(len(self.au_columns), nan))
        for column, p in zip(self.au_columns, probs, strict=True):
            row[column] = float(p)
        for column, p in zip(self.au_columns, probs, strict=True):
            row[column + "_c"] = int(p >= self.threshold) if pred else nan
        if self.num_landmarks:
            points = (align.transform_points(face.to_image, pred["landmarks"]) if pred
                      else np.full((self.num_landmarks, 2), nan))
            row.update({f"x_{i}": float(x) for i, x in enumerate(points[:, 0])})
            row.update({f"y_{i}": float(y) for i, y in enumerate(points[:, 1])})
        return row


def prediction_networks(config: Config, phase: str) -> tuple[str, ...]:
    """The networks of a run that prediction uses, in `state.network_names` order."""
    return tuple(n for n in state_lib.network_names(config, phase) if n in PREDICTION_NETWORKS)


def _crops(chunk) -> np.ndarray:
    crops = [f.crop for _, faces, _ in chunk for f in faces if f.crop is not None]
    return np.stack(crops) if crops else np.zeros((0,))


def _collect(dispatched: list[dict], n: int) -> dict[str, np.ndarray]:
    """The first `n` rows of the dispatched batches' outputs, as numpy arrays."""
    if not dispatched:
        return {}
    fetched = jax.device_get(dispatched)
    return {k: np.concatenate([np.asarray(b[k]) for b in fetched])[:n] for k in fetched[0]}


def _import_pandas():
    try:
        import pandas
    except ImportError as e:
        raise ImportError("as_frame=True needs pandas: pip install 'audjax[pandas]'") from e
    return pandas

