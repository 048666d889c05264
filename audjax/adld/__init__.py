"""ADLD (Shao et al., TAC 2022) in audjax: its PyTorch checkpoints imported (`importer`), and its
networks, losses and training step written in PyTorch (`torch_reference`, extra `bench`) as the
reference the tests and the benchmark compare audjax with."""

from audjax.adld.importer import ADLD_NAMES, import_state_dicts

__all__ = ["ADLD_NAMES", "import_state_dicts"]
