"""The one exception type of the data pipeline."""


class DataError(ValueError):
    """Bad data input: the message says what was wrong, where (file, line or option) and what to do."""
