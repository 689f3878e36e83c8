"""Running training: the one pretraining/distillation loop (`loop`) and multi-process training
with torch.distributed (`distributed`). Imports nets, data, config and checkpoint; never eval,
jobs or pictures.
"""
