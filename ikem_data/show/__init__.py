"""Pictures of one stored sample, `ikem-data show`: `sample` reads it and checks the options,
`draw` makes the matplotlib figure or animation. Imports the ground floor and
ikem_data.modalities; never torch or ikem_train.
"""
