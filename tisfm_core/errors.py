"""The one exception type users see.

Every problem with user input (files, sequences, ids, checkpoints, options) raises
:class:`TisfmError` with a message that names the file, line, sequence or field and what was
expected. The CLI prints it as one line; the app shows it in an error box.
"""


class TisfmError(ValueError):
    """A problem with user input or saved state, explained in one sentence."""
