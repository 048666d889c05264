"""audjax: facial action unit detection that adapts from lab to in-the-wild faces.

A JAX/Flax reimplementation of Shang & Yu, "Boosting facial action unit detection through jointly
learning facial landmark detection and domain separation and reconstruction" (built on ADLD).
"""

__version__ = "0.1.0"
