"""ikem_train: streaming MoCo/CrosSCLR/IKEM pretraining, distillation and linear evaluation."""

from ikem_data import __version__

__all__ = ["__version__"]
