"""Frames from what people point a detector at: image files, folders, videos and arrays.

    for frame in iter_frames(["photo.jpg", "clips/", rgb_array], every=5):
        frame.input, frame.frame, frame.timestamp, frame.image  # image: HxWx3 uint8 BGR

A folder is searched recursively for images (`IMAGE_SUFFIXES`) and videos (`VIDEO_SUFFIXES`),
in sorted path order; a file given by name is a video when its suffix says so, else an image.
Videos are decoded with OpenCV (its FFmpeg backend): `frame` is the 0-based frame index and
`timestamp` the index over the video's frame rate, in seconds, as py-feat and OpenFace count time
(OpenFace numbers frames from 1). `every=k` keeps frames 0, k, 2k, ... (the skipped ones are
only grabbed, not decoded). A still image is frame 0 with no timestamp (NaN).

An input that cannot be read (missing, not an image, a video OpenCV cannot open) becomes a single
`Frame` with `error` set and no image, so the caller decides whether to stop or to report it and
go on; one bad file never hides the others.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from audjax.data.images import load_image
from audjax.data.prepare import IMAGE_SUFFIXES

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


@dataclass
class Frame:
    """One image, or one frame of a video, or the reason an input could not be read.

    Attributes:
      input: the file's path as given (joined to its folder for a folder's files), or
        "<array i>" for the i-th array input.
      frame: 0-based frame index in a video; 0 for an image.
      timestamp: seconds from the video's start; NaN for an image.
      image: HxWx3 uint8 BGR (OpenCV's order); None when `error` is set.
      error: why the input could not be read, or None.
      fps: a video's frame rate (NaN for an image or when the video does not say).
    """

    input: str
    frame: int
    timestamp: float
    image: np.ndarray | None
    error: str | None = None
    fps: float = math.nan


def as_input_list(inputs) -> list:
    """One input (a path or an array) or a list of them -> a list."""
    if isinstance(inputs, (str, os.PathLike, np.ndarray)):
        return [inputs]
    return list(inputs)


@dataclass(frozen=True)
class Source:
    """One file or array of the inputs, whose frames `source_frames` reads: `item` is a Path or
    an HxWx3 RGB array, or None with `error` set (a missing path, an empty folder)."""

    name: str
    item: Path | np.ndarray | None
    error: str | None = None


def sources(inputs: Iterable) -> Iterator[Source]:
    """The files and arrays of `inputs` (paths of images, videos or folders, or arrays), in
    order, folders expanded (see the module doc)."""
    for i, item in enumerate(as_input_list(inputs)):
        if isinstance(item, np.ndarray):
            yield Source(f"<array {i}>", item)
            continue
        path = Path(item).expanduser()
        if not path.exists():
            yield Source(str(item), None, "no such file or folder")
        elif path.is_dir():
            files = [p for p in sorted(path.rglob("*")) if p.is_file()
                     and p.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES]
            if not files:
                yield Source(str(item), None, "no images or videos in this folder")
            for file in files:
                yield Source(str(file), file)
        else:
            yield Source(str(item), path)


def is_video(source: Source) -> bool:
    return isinstance(source.item, Path) and source.item.suffix.lower() in VIDEO_SUFFIXES


def source_frames(source: Source, every: int = 1) -> Iterator[Frame]:
    """The frames of one `Source`."""
    if every < 1:
        raise ValueError(f"every={every}: must be at least 1")
    if source.error is not None:
        yield Frame(source.name, 0, math.nan, None, source.error)
    elif isinstance(source.item, np.ndarray):
        yield Frame(source.name, 0, math.nan, _bgr_from_array(source.item, source.name))
    else:
        yield from _file_frames(source.item, every)


def iter_frames(inputs: Iterable, every: int = 1) -> Iterator[Frame]:
    """The frames of `inputs` (paths of images, videos or folders, or HxWx3 uint8 RGB arrays),
    in order; see the module doc."""
    if every < 1:
        raise ValueError(f"every={every}: must be at least 1")
    for source in sources(inputs):
        yield from source_frames(source, every)


def _bgr_from_array(array: np.ndarray, name: str) -> np.ndarray:
    if array.dtype != np.uint8 or array.ndim not in (2, 3) or array.shape[2:] not in ((), (3,)):
        raise ValueError(f"{name}: expected an HxWx3 (RGB) or HxW uint8 array, got "
                         f"{array.dtype} {array.shape}")
    if array.ndim == 2:
        return cv2.cvtColor(array, cv2.COLOR_GRAY2BGR)
    return array[..., ::-1]


def _file_frames(path: Path, every: int) -> Iterator[Frame]:
    if path.suffix.lower() in VIDEO_SUFFIXES:
        yield from _video_frames(path, every)
        return
    try:
        # load_image gives an RGB view of OpenCV's BGR array; reversing it again is that array.
        image = load_image(str(path))[..., ::-1]
    except (OSError, ValueError) as e:
        yield Frame(str(path), 0, math.nan, None, _reason(e, path))
        return
    yield Frame(str(path), 0, math.nan, image)


def _reason(error: Exception, path: Path) -> str:
    """An exception's message without the file name the caller prints anyway."""
    return str(error).replace(f"{path}: ", "")


def _video_frames(path: Path, every: int) -> Iterator[Frame]:
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            yield Frame(str(path), 0, math.nan, None, "cannot open video")
            return
        fps = capture.get(cv2.CAP_PROP_FPS)
        fps = fps if fps > 0 else math.nan
        index = 0
        while True:
            wanted = index % every == 0
            # grab() reads a frame without decoding it: skipped frames cost little.
            ok, image = capture.read() if wanted else (capture.grab(), None)
            if not ok:
                break
            if wanted:
                yield Frame(str(path), index, index / fps, image, fps=fps)
            index += 1
        if index == 0:
            yield Frame(str(path), 0, math.nan, None, "no decodable frame in video")
    finally:
        capture.release()
