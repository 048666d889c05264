"""Writing files whole: a reader sees the old file or the new one, never half of one.

Every file audjax writes in one go (lists, images, config.json, results, SynthAU, CSV tables)
goes through `atomic_write` or `atomic_path`.
"""

import contextlib
import os
import secrets


@contextlib.contextmanager
def atomic_path(file):
    """A temporary path beside `file` to write to; renamed over `file` when the block ends
    normally, deleted when it raises. The path keeps `file`'s suffix, for writers that choose a
    format by it (cv2.VideoWriter, cv2.imwrite).

    A reader (or a re-run after a crash) sees the old file or the new one, never half of one.
    """
    file = os.fspath(file)
    folder, name = os.path.split(file)
    os.makedirs(folder or ".", exist_ok=True)
    suffix = os.path.splitext(name)[1]
    tmp = os.path.join(folder, f".{name}.{secrets.token_hex(6)}.tmp{suffix}")
    try:
        yield tmp
        os.replace(tmp, file)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write(file, data):
    """Writes `data` (str or bytes) to `file` through a temporary file (`atomic_path`)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    # A unique name created with open(..., "xb") (not tempfile.mkstemp, whose files are private
    # to their owner): the result gets the usual permissions.
    with atomic_path(file) as tmp, open(tmp, "xb") as f:
        f.write(data)
