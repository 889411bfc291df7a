"""Placeholder: configuration_t5.py and configuration_siglip.py import the (download URL) archive maps; nothing uses them here."""
T5_PRETRAINED_CONFIG_ARCHIVE_MAP = {}
SIGLIP_PRETRAINED_CONFIG_ARCHIVE_MAP = {}
