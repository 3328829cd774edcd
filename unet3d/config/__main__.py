"""``python -m unet3d.config``: print the configuration reference generated from the schema."""

from unet3d.config.docs import markdown

print(markdown())
