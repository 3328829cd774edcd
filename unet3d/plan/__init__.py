"""Planning: from a dataset folder to a config that fits its data, the device and a time budget."""
