"""The one error every data reader and the schema raise (kept apart so that image stores, the
ground truth and the schema can all use it without importing one another)."""


class DatasetError(ValueError):
    """A dataset table or file breaks the canonical schema; the message names what and where."""
