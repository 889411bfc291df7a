"""transformers.utils.logging, reduced to get_logger; Logger.warning_once as transformers defines it (a cached warning)."""
import functools
import logging

logging.Logger.warning_once = functools.lru_cache(None)(logging.Logger.warning)


def get_logger(name=None):
    return logging.getLogger(name)
