"""Pictures of runs: training curves and confusion matrices (`plots`), t-SNE maps of frozen
features (`embed`). matplotlib and scikit-learn are imported inside the functions that draw.
Imports eval and the ground floor; never jobs.
"""
