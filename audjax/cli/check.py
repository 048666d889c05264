"""audjax check: validate the list files of a prefix and decode every image
(`audjax.data.lists`), e.g. `audjax check ROOT/list/source_train --data_root ROOT --crop 176`.

PREFIX names a split's list files: PREFIX_path.txt, PREFIX_land.txt, PREFIX_AUoccur.txt.
"""

from __future__ import annotations

import sys

from absl import flags

from audjax.cli.common import parse

USAGE = "PREFIX [--data_root ROOT] [--crop S] [--num_landmarks L]"
FLAGS = flags.FlagValues()
flags.DEFINE_string("data_root", None, "folder the image paths are relative to (default: the "
                    "working directory)", flag_values=FLAGS)
flags.DEFINE_integer("num_landmarks", 49, "landmarks per line of P_land.txt", lower_bound=1,
                     flag_values=FLAGS)
flags.DEFINE_integer("crop", None, "also check that every image allows this crop size",
                     lower_bound=1, flag_values=FLAGS)


def main(argv) -> int:
    (prefix,) = parse(FLAGS, argv, "check", USAGE, __doc__, positional=(1, 1))
    from audjax.data import lists

    try:
        data = lists.read_lists(prefix, data_root=FLAGS.data_root,
                                num_landmarks=FLAGS.num_landmarks, check_images=True,
                                crop=FLAGS.crop)
    except lists.ListError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(lists.summary(data, images_checked=True))
    return 0
