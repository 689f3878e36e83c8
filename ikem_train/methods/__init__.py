"""Self-supervised methods: MoCo queue and InfoNCE (`moco`), CrosSCLR mining (`crossclr`), the
IKEM term (`ikem`), relational distillation (`distill`), and the models that assemble them
(`model`). Imports ikem_train.nets, ikem_train.data and ikem_train.training.distributed; never
eval, jobs or pictures.
"""
