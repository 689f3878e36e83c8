"""Evaluation of encoders: frozen features and their health checks (`features`), linear
classifiers (`linear`), KNN retrieval (`knn`), fine-tuning (`finetune`) and late fusion of
saved scores (`fuse`). Imports nets, methods, data and training; never jobs or pictures.
"""
