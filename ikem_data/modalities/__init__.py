"""The second store stage, `ikem-data modalities`: preprocessing and the six modalities.

`preprocess` (valid length, centring, resize, y-alignment) and `kernels` (the six modalities)
are numba functions over (N, 3, T, V, M) arrays; `stage` runs them over a store chunk by
chunk. Imports numpy, numba and the ground floor (store, locks, layouts, names); never
gendata, formats, torch or ikem_train.
"""
