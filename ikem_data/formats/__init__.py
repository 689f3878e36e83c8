"""Input formats: one module per kind of raw recording, each turning its files into samples.

NTU RGB+D `.skeleton` files (`ntu` names and benchmarks, `skeleton` the byte parser), Kinect v2
CSV captures (`kinect_csv`), PKU-MMD videos (`pku`) and pyskl pickles (`pyskl`). Modules here
import only numpy, the standard library and the ground floor of ikem_data (layouts, names,
store); never gendata, torch or ikem_train.
"""
