"""Importers of the AU data sets as shipped: BP4D, DISFA, EmotioNet -> ADLD's lists.

Each reads a release where it was unpacked, builds `audjax.data.prepare.RawItem`s (labels from
the release's own files, landmarks from dlib) per split and writes each split with
`audjax.data.prepare.prepare` under the prefix names the training flags expect (docs/data.md):

    import_bp4d(RAW, DATA)       -> list/BP4D_{train,val,test}       (ADLD's subject split)
    import_disfa(RAW, DATA)      -> list/DISFA_{train,val,test}      (JAA-Net's folds)
    import_emotionet(RAW, DATA)  -> list/emotioNet_{train,val,test}  (ADLD's halves)

`audjax prepare bp4d|disfa|emotionet RAW --out DATA` is the command line (audjax.cli.releases).
"""

from audjax.data.releases.bp4d import import_bp4d
from audjax.data.releases.disfa import import_disfa
from audjax.data.releases.emotionet import import_emotionet

IMPORTERS = {"bp4d": import_bp4d, "disfa": import_disfa, "emotionet": import_emotionet}
