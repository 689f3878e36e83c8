"""Data on the training side: batch datasets over a store (`datasets`), the pretraining
augmentations in numpy (`augment`) and the six modalities in torch on the training device
(`device_modalities`). Imports ikem_data and torch; nothing else of ikem_train.
"""
