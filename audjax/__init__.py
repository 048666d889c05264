"""audjax: facial action unit detection that adapts from lab to in-the-wild faces.

A JAX/Flax reimplementation of Shang & Yu, "Boosting facial action unit detection through jointly
learning facial landmark detection and domain separation and reconstruction" (built on ADLD).

`audjax.Detector` scores the AUs of faces in photos and videos with a trained run
(`audjax.inference.detector`); it is imported on first use, so `import audjax` stays cheap.
"""

__version__ = "0.1.0"


def __getattr__(name):
    if name == "Detector":
        from audjax.inference.detector import Detector

        return Detector
    raise AttributeError(f"module 'audjax' has no attribute {name!r}")
