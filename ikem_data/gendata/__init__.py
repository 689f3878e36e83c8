"""The first store stage, `ikem-data gendata`: raw recordings into the `raw/` part of a store.

`run` holds the entry point and the order of the steps, `plan` lists the inputs, `workers`
parses them in processes, `write` creates and fills the store, `out` decides what to do with
what is already there, `errors` holds the one error type. Imports ikem_data.formats and the
ground floor (store, locks, layouts, names); never modalities, torch or ikem_train.
"""

from ikem_data.gendata.errors import GendataError
from ikem_data.gendata.plan import INPUT_FORMATS, ON_ERROR, plan
from ikem_data.gendata.run import gendata

__all__ = ["GendataError", "INPUT_FORMATS", "ON_ERROR", "gendata", "plan"]
