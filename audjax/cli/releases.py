"""audjax prepare bp4d|disfa|emotionet RAW: a release as shipped -> aligned images + ADLD lists.

Called by `audjax prepare` when its first argument names a release; each release has its own
flags (`audjax prepare bp4d --help`). The work is `audjax.data.releases`.
"""

from __future__ import annotations

import sys

from absl import flags

from audjax.cli.common import parse

DOCS = {
    "bp4d": "BP4D-Spontaneous (the full release's 2D+3D/ and AUCoding/AU_OCC/, or FERA 2015's\n"
            "BP4D-training/ and AUCoding/) -> DATA/list/BP4D_{train,val,test}: ADLD's subject\n"
            "split (or a JAA-Net fold), frames aligned with dlib's landmarks, AU weights for\n"
            "the training split.",
    "disfa": "DISFA (Videos_LeftCamera/*.avi and ActionUnit_Labels/) -> DATA/list/DISFA_{train,\n"
             "val,test}: the videos decoded once to DATA/decoded/DISFA, intensities binarised\n"
             "at --threshold, JAA-Net's subject folds.",
    "emotionet": "EmotioNet (the labelled table, its images, a folder of unlabelled images) ->\n"
                 "DATA/list/emotioNet_{train,val,test}: --train_size unlabelled training\n"
                 "images and ADLD's validation / test halves of the labelled table.",
}
AUS = {"bp4d": "1 2 4 6 7 10 12 14 15 17 23 24", "disfa": "1 2 4 5 6 9 12 15 17 20 25 26",
       "emotionet": "those the table has columns for"}
# Each importer's MIN_FACE (audjax.data.releases.*; tests/test_releases.py checks they agree),
# written out so that the flags are defined without importing the data code.
MIN_FACE = {"bp4d": 160, "disfa": 120, "emotionet": 40}


def _flags(release: str) -> flags.FlagValues:
    """The flags of `release`: the shared ones, then its own."""
    values = flags.FlagValues()
    flags.DEFINE_string("out", None, "data root to write images/ and list/ under", required=True,
                        flag_values=values)
    flags.DEFINE_string("frames", None, "the frames (videos for DISFA, images for EmotioNet) "
                        "where they are not in the release's own layout", flag_values=values)
    flags.DEFINE_string("labels", None, "the labels (a folder; EmotioNet: the table file) where "
                        "they are not in the release's own layout", flag_values=values)
    flags.DEFINE_string("aus", "1,2,4,6,12,17", f"the AUs to label, of {AUS[release]}",
                        flag_values=values)
    flags.DEFINE_string("name", {"bp4d": "BP4D", "disfa": "DISFA", "emotionet": "emotioNet"}[
        release], "list prefix stem: list/NAME_train, NAME_val, NAME_test", flag_values=values)
    flags.DEFINE_integer("out_size", 200, "side of the aligned images", lower_bound=1,
                         flag_values=values)
    flags.DEFINE_float("box_enlarge", 2.8, "aligned image side / anchor box side",
                       flag_values=values)
    flags.DEFINE_integer("workers", 0, "processes (0: one per available core)", lower_bound=0,
                         flag_values=values)
    flags.DEFINE_float("min_face", MIN_FACE[release], "the smallest face dlib looks for, in "
                       "pixels (larger is faster on large frames; default fit for the release: "
                       "docs/data.md)", lower_bound=1, flag_values=values)
    if release == "bp4d":
        flags.DEFINE_enum("split", "adld", ["adld", "fold1", "fold2", "fold3"],
                          "adld: ADLD's train / val / test subjects; foldN: JAA-Net's fold N",
                          flag_values=values)
    elif release == "disfa":
        flags.DEFINE_enum("split", "fold1", ["fold1", "fold2", "fold3"], "JAA-Net's fold",
                          flag_values=values)
        flags.DEFINE_integer("threshold", 2, "an AU is present at this intensity or above",
                             lower_bound=1, upper_bound=5, flag_values=values)
        flags.DEFINE_string("decoded", None, "where the decoded frames go (default "
                            "OUT/decoded/NAME)", flag_values=values)
    else:
        flags.DEFINE_string("unlabelled", None, "folder of unlabelled training images "
                            "(default RAW/unlabelled)", flag_values=values)
        flags.DEFINE_string("url_to_file", "basename", "how a URL names its image under "
                            "--frames: basename (its last component, anywhere) or strip:PREFIX "
                            "(the rest of the URL is the relative path)", flag_values=values)
        flags.DEFINE_integer("train_size", 200000, "unlabelled training images to take (0: all)",
                             lower_bound=0, flag_values=values)
    return values


FLAGS = {release: _flags(release) for release in DOCS}


def main(release: str, argv) -> int:
    """`audjax prepare RELEASE RAW --out DATA [flags]`."""
    values = FLAGS[release]
    (root,) = parse(values, argv, f"audjax prepare {release}", "RAW --out DATA [flags]",
                    DOCS[release], positional=(1, 1))
    from audjax.data.releases import IMPORTERS

    own = {"split", "threshold", "decoded", "unlabelled", "url_to_file", "train_size"}
    kwargs = {k: values[k].value for k in own if k in values}
    try:
        report = IMPORTERS[release](
            root, values.out, frames=values.frames, labels=values.labels, aus=values.aus,
            name=values.name, out_size=values.out_size, box_enlarge=values.box_enlarge,
            workers=values.workers or None, min_face=values.min_face, **kwargs)
    except ValueError as e:  # a ListError names its file and line, the others their flag
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(report.summary())
    return 0
