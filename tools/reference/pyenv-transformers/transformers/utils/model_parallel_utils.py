"""Placeholders: only T5's deprecated parallelize() uses these."""


def assert_device_map(device_map, num_blocks):
    raise NotImplementedError("model parallelism is not part of the reference environment")


def get_device_map(n_layers, devices):
    raise NotImplementedError("model parallelism is not part of the reference environment")
