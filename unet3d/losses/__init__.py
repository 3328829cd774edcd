"""Losses a config's ``loss.name`` can refer to, before ``monai.losses`` and ``torch.nn``.

Any ``torch.nn.Module`` subclass defined or imported here is available by its class name.
"""
