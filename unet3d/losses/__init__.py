"""Losses: those a config's ``loss.name`` can refer to, before ``monai.losses`` and ``torch.nn``, and the
deep-supervision wrapper training puts around the configured loss (``unet3d.losses.deep_supervision``).

Any ``torch.nn.Module`` subclass defined or imported in this file is available by its class name;
a new loss is written in a module of this package and imported here.
"""
