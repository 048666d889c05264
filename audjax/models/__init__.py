"""Flax Linen modules of audjax (docs/design.md §1). See `networks.py` for what each one is."""

from audjax.models.init import torch_default_init
from audjax.models.networks import (
    AUDetector,
    BackgroundEncoder,
    DomainDiscriminator,
    FeatureExtractor,
    FeatureGenerator,
    LandmarkDiscriminator,
    LandmarkEncoder,
    LandmarkHead,
    LandmarkNet,
    Projector,
    Projectors,
    feature_channels,
    spatial_softmax,
)

__all__ = [
    "AUDetector",
    "BackgroundEncoder",
    "DomainDiscriminator",
    "FeatureExtractor",
    "FeatureGenerator",
    "LandmarkDiscriminator",
    "LandmarkEncoder",
    "LandmarkHead",
    "LandmarkNet",
    "Projector",
    "Projectors",
    "feature_channels",
    "spatial_softmax",
    "torch_default_init",
]
