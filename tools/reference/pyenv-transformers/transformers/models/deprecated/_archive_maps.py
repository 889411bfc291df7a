"""Placeholder: configuration_t5.py imports the (download URL) archive map; nothing uses it here."""
T5_PRETRAINED_CONFIG_ARCHIVE_MAP = {}
