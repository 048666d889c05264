"""audjax prepare: raw face images -> aligned images + ADLD list files (`audjax.data.prepare`).

Every image under --images gets its landmarks from --landmarks (else from dlib with --annotate),
is aligned and written to OUT/images/NAME/; the lists go to OUT/list/NAME_*.txt. Re-running
only processes what changed.

`audjax prepare bp4d|disfa|emotionet RAW --out DATA` imports a data set as shipped instead
(`audjax prepare bp4d --help`: its flags; audjax.cli.releases).
"""

from __future__ import annotations

import sys

from absl import flags

from audjax.cli.common import fail, parse

USAGE = "--images RAW (--landmarks FILE | --annotate) --out DATA --name SPLIT [flags]"
FLAGS = flags.FlagValues()
flags.DEFINE_string("images", None, "folder of raw images (searched recursively)", required=True,
                    flag_values=FLAGS)
flags.DEFINE_string("landmarks", None, "file of lines `path x1 y1 ... x68 y68`",
                    flag_values=FLAGS)
flags.DEFINE_bool("annotate", False, "detect the landmarks of images without any with dlib",
                  flag_values=FLAGS)
flags.DEFINE_string("labels", None, "file of lines `path l1 ... lK` (1 / 0 / 999)",
                    flag_values=FLAGS)
flags.DEFINE_string("out", None, "data root to write images/ and list/ under", required=True,
                    flag_values=FLAGS)
flags.DEFINE_string("name", None, "split name, the list prefix (e.g. source_train)",
                    required=True, flag_values=FLAGS)
flags.DEFINE_integer("out_size", 200, "side of the aligned images", lower_bound=1,
                     flag_values=FLAGS)
flags.DEFINE_float("box_enlarge", 2.8, "aligned image side / anchor box side", flag_values=FLAGS)
flags.DEFINE_integer("workers", 0, "processes (0: one per available core)", lower_bound=0,
                     flag_values=FLAGS)
flags.DEFINE_float("min_face", 40, "--annotate: the smallest face to find, in pixels (larger: "
                   "faster on large frames)", lower_bound=1, flag_values=FLAGS)
flags.DEFINE_bool("bench", False, "time --annotate with --min_face against the full-resolution "
                  "detection on the images, into OUT/list/NAME_{fast,full}",
                  flag_values=FLAGS)
flags.DEFINE_enum("format", "keep", ["keep", "png", "jpg"],
                  "aligned image format (keep: the source's)", flag_values=FLAGS)


def main(argv) -> int:
    from audjax.cli import releases

    if argv and argv[0] in releases.DOCS:  # a release importer, with its own flags
        return releases.main(argv[0], argv[1:])
    parse(FLAGS, argv, "prepare", USAGE, __doc__)
    f = FLAGS
    if f.bench:
        from audjax.data import prepare

        prepare.bench(f.images, f.out, f.name, min_face=f.min_face, workers=f.workers or 1)
        return 0
    if not f.landmarks and not f.annotate:
        raise fail("prepare", "give --landmarks FILE, --annotate, or both")
    from audjax.data import prepare

    try:
        report = prepare.prepare_folder(
            f.images, f.out, f.name, landmarks=f.landmarks, labels=f.labels,
            annotate=f.annotate, out_size=f.out_size, box_enlarge=f.box_enlarge,
            workers=f.workers or None, image_format=f.format, min_face=f.min_face)
    except ValueError as e:  # a ListError names its file and line, the others their flag
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(report.summary())
    return 0
