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


def check_number(value, name, *, low=None, high=None, low_open=False, allow_none=False):
    """``value`` as a finite float within [low, high] (``low_open``: strictly above ``low``),
    else a TisfmError naming ``name`` (scikit-learn's ``check_scalar`` for our options)."""
    import math
    import numbers

    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise TisfmError(f"{name} must be a finite number, got {value!r}")
    value = float(value)
    if low is not None and (value <= low if low_open else value < low):
        raise TisfmError(f"{name} must be {'>' if low_open else '>='} {low:g}, got {value:g}")
    if high is not None and value > high:
        raise TisfmError(f"{name} must be <= {high:g}, got {value:g}")
    return value


def check_choice(value, name, choices):
    """``value`` when it is one of ``choices``, else a TisfmError listing them."""
    if not isinstance(value, str) or value not in choices:
        raise TisfmError(f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}")
    return value


def check_indices(indices, what="base indices", *, ndim=2, length=None):
    """Base indices (A=0, C=1, G=2, T=3, N=4) as uint8, checked the one way every entry point does.

    Parameters
    ----------
    indices : array-like of int
        Shape (N, L) when ``ndim`` is 2; any shape with at least one axis when ``ndim`` is None.
        Float and bool arrays are refused: they are one-hot encodings, not indices.
    what : str
        Named in the message.
    length : int, optional
        Required last axis (the model's window).
    """
    import numpy as np

    arr = np.asarray(indices)
    if arr.dtype.kind not in "iu":
        raise TisfmError(f"{what} must be integers 0..4 (A, C, G, T, N), got dtype {arr.dtype}")
    if (ndim is not None and arr.ndim != ndim) or arr.ndim < 1:
        raise TisfmError(f"{what} must be shaped {'(N, L)' if ndim == 2 else '(..., L)'}, got {arr.shape}")
    if length is not None and arr.shape[-1] != length:
        raise TisfmError(f"{what} must have {length} positions, got {arr.shape[-1]}")
    if arr.size and (arr.min() < 0 or arr.max() > 4):
        raise TisfmError(f"{what} must lie in 0..4 (A, C, G, T, N), found {arr.min()}..{arr.max()}")
    return arr.astype(np.uint8, copy=False)


def check_outputs(outputs, n_outputs, names=None, what="outputs", owner="this model"):
    """Positions of the selected outputs, as int64 (R,), in the order given; None selects all.

    ``outputs`` may hold positions or, when ``names`` (all the model's output names) is given,
    names; the same vocabulary in training, attribution and analyses.
    """
    import numpy as np

    if outputs is None:
        return np.arange(n_outputs, dtype=np.int64)
    if isinstance(outputs, (str, int, np.integer)):
        outputs = [outputs]
    outputs = list(outputs)
    if not outputs:
        raise TisfmError(f"{what} names no output")
    positions = []
    for item in outputs:
        if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            if not 0 <= item < n_outputs:
                raise TisfmError(f"output position {item} does not exist: {owner} has {n_outputs} "
                                 f"outputs (0..{n_outputs - 1})")
            positions.append(int(item))
        elif isinstance(item, str) and names is not None:
            if item not in names:
                shown = ", ".join(map(str, list(names)[:8])) + (" ..." if len(names) > 8 else "")
                raise TisfmError(f"{item!r} is not an output of {owner}; valid outputs: {shown}")
            positions.append(list(names).index(item))
        else:
            kind = "output names or positions" if names is not None else "output positions (integers)"
            raise TisfmError(f"{what} must be {kind}, got {item!r}")
    if len(set(positions)) != len(positions):
        raise TisfmError(f"{what} names an output twice")
    return np.asarray(positions, dtype=np.int64)
