"""``python -m ikem_train``: the ``ikem-train`` commands, the form torchrun starts.

    torchrun --standalone --nproc-per-node 4 -m ikem_train pretrain --store ntu60.zarr ...

runs the same click group as the ``ikem-train`` console script, in every process.
"""

from ikem_cli.train import main

if __name__ == "__main__":
    main(prog_name="ikem-train")
