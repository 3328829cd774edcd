"""Models a config's ``model.name`` can refer to, before MONAI's ``monai.networks.nets``.

Any ``torch.nn.Module`` subclass defined or imported here is available by its class name;
MONAI's networks (``DynUNet``, ``UNet``, ``SegResNet``, ...) need nothing here.
"""
