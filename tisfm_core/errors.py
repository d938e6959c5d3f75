"""The one exception type users see.

Every problem with user input (files, sequences, ids, checkpoints, options) raises
:class:`TisfmError` with a message that names the file, line, sequence or field and what was
expected. The CLI prints it as one line; the app shows it in an error box.
"""


class TisfmError(ValueError):
    """A problem with user input or saved state, explained in one sentence."""


def check_integer(value, name, minimum=1):
    """``value`` as an int when it is an integer >= ``minimum`` (not a bool), else a TisfmError
    naming ``name``: the one check behind every count, size and index option."""
    import numbers

    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise TisfmError(f"{name} must be {what}, got {value!r}")
    return int(value)
