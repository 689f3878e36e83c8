"""Networks: the quarter-width ST-GCN encoder (`stgcn`) and its skeleton graph (`graph`).

torch and ikem_data.layouts only; no training, method or evaluation code.
"""
