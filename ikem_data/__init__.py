"""ikem_data: raw NTU RGB+D skeletons into chunked stores, preprocessing and the six modalities.

numpy + numba only; nothing here imports torch.
"""

__version__ = "0.1.0"
