"""The error of a model yaml that cannot be built (raised by models/config.py and models/parse.py)."""


class ModelConfigError(ValueError):
    """A model yaml that cannot be built; the message names the file, and the layer when there is one."""
