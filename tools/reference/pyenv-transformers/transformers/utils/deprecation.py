"""transformers.utils.deprecation.deprecate_kwarg as a no-op: it only renames deprecated keyword arguments (with a
warning); the reference scripts pass none."""


def deprecate_kwarg(old_name, version, new_name=None, **kwargs):
    def decorator(func):
        return func

    return decorator
