"""The AI-TAC baseline CNN (Maslova et al. 2020) as used in tiSFM's comparison (Fig 1B/C).

Architecture as in the reference's ``models/aitac.py`` (reference doc section 6): three
Conv2d → ReLU → MaxPool2d → BatchNorm2d blocks on the one-hot sequence viewed as a (1, 4, L)
image, then two hidden Linear(1000) layers with ReLU and dropout and a linear output layer.
"""

import torch
from torch import nn

from .errors import TisfmError
from .model import check_model_memory

__all__ = ["AITAC"]

# (out channels, kernel width, zero padding each side, pool width) per conv block; the first
# block's channel count is the ``n_filters`` argument.
_BLOCKS = ((None, 19, 9, 3), (200, 11, 5, 4), (200, 7, 3, 4))
_HIDDEN = 1000


def _pool_length(length, width):
    """Output length of MaxPool(kernel=width, stride=width, padding=1) on ``length`` positions."""
    return (length + 2 - width) // width + 1


class AITAC(nn.Module):
    """AI-TAC convolutional network.

    Parameters
    ----------
    n_outputs : int
        Number of regression outputs R (cell types or lineages).
    length : int, optional
        Input sequence length L; fixes the flatten size. Default 300 (tiSFM windows); the AI-TAC
        sample data uses 251.
    n_filters : int, optional
        Number of first-layer filters. Default 300.
    dropout : float, optional
        Dropout probability after each hidden Linear layer. Default 0.03.

    Notes
    -----
    Weights are initialised like the reference's ``init_weights``: conv weights
    ``kaiming_normal_(nonlinearity="relu")``, hidden Linear weights
    ``kaiming_uniform_(nonlinearity="relu")``, the output Linear weight
    ``kaiming_uniform_(nonlinearity="linear")``. Biases keep PyTorch's default init, which the
    reference does not touch either. Seed with ``torch.manual_seed`` for reproducible weights.

    With ``n_outputs=8`` the model has 3,174,908 parameters at L = 300 and 2,974,908 at L = 251.
    """

    def __init__(self, n_outputs, length=300, n_filters=300, dropout=0.03):
        super().__init__()
        for name, value in (("n_outputs", n_outputs), ("length", length), ("n_filters", n_filters)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise TisfmError(f"AITAC option {name!r} must be a positive integer, got {value!r}.")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise TisfmError(f"AITAC option 'dropout' must be a number in [0, 1), got {dropout!r}.")
        self.n_outputs = n_outputs
        self.length = length
        self.n_filters = n_filters
        self.dropout_rate = float(dropout)

        lengths = self.feature_lengths()
        if min(lengths) < 1:
            raise TisfmError(f"AITAC option 'length' is too short: the layers of length {length} "
                             f"shrink to {lengths}; use at least 16.")
        check_model_memory(self.memory_estimate(), f"AI-TAC with {n_outputs:,} outputs, a {length:,} "
                                                   f"bp window and {n_filters:,} filters")

        blocks, in_channels = [], 1
        for index, (channels, width, pad, pool) in enumerate(_BLOCKS):
            channels = n_filters if channels is None else channels
            # The first kernel spans all 4 bases; later ones see a height-1 feature map.
            height = 4 if index == 0 else 1
            blocks.append(nn.Sequential(
                nn.ConstantPad2d((pad, pad, 0, 0), 0.0),
                nn.Conv2d(in_channels, channels, (height, width)),
                nn.ReLU(),
                nn.MaxPool2d((1, pool), stride=(1, pool), padding=(0, 1)),
                nn.BatchNorm2d(channels),
            ))
            in_channels = channels
        self.layer1, self.layer2, self.layer3 = blocks
        self.flatten_size = in_channels * lengths[-1]

        self.fc1 = nn.Linear(self.flatten_size, _HIDDEN)
        self.fc2 = nn.Linear(_HIDDEN, _HIDDEN)
        self.fc3 = nn.Linear(_HIDDEN, n_outputs)
        self.activation = nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self._init_weights()

    def init_args(self):
        """The constructor arguments, for rebuilding the model from a run's config.json."""
        return {"n_outputs": self.n_outputs, "length": self.length, "n_filters": self.n_filters,
                "dropout": self.dropout_rate}

    def _init_weights(self):
        for block in (self.layer1, self.layer2, self.layer3):
            nn.init.kaiming_normal_(block[1].weight, nonlinearity="relu")
        for layer in (self.fc1, self.fc2):
            nn.init.kaiming_uniform_(layer.weight, nonlinearity="relu")
        nn.init.kaiming_uniform_(self.fc3.weight, nonlinearity="linear")

    def n_parameters(self):
        """Parameter count (computed from the options, before the layers exist)."""
        count, in_channels = 0, 1
        for index, (channels, width, _, _) in enumerate(_BLOCKS):
            channels = self.n_filters if channels is None else channels
            count += channels * in_channels * (4 if index == 0 else 1) * width + 3 * channels
            in_channels = channels
        flatten = in_channels * self.feature_lengths()[-1]
        return count + (flatten + 1) * _HIDDEN + (_HIDDEN + 1) * _HIDDEN + (_HIDDEN + 1) * self.n_outputs

    def memory_estimate(self, chunk_size=16):
        """Bytes to train: weights, gradients and two Adam moments, plus three float copies of
        the widest activation for ``chunk_size`` sequences (see :func:`check_model_memory`)."""
        return 4 * (4 * self.n_parameters() + 3 * chunk_size * self.n_filters * self.length)

    def feature_lengths(self):
        """Sequence-axis length after each pad, conv and pool, in order.

        Returns
        -------
        list of int
            Nine lengths ``[pad1, conv1, pool1, pad2, conv2, pool2, pad3, conv3, pool3]``, e.g.
            ``[318, 300, 100, 110, 100, 25, 31, 25, 6]`` for L = 300.
        """
        trace, n = [], self.length
        for _, width, pad, pool in _BLOCKS:
            n = n + 2 * pad
            trace.append(n)
            n = n - width + 1
            trace.append(n)
            n = _pool_length(n, pool)
            trace.append(n)
        return trace

    def features(self, x):
        """The hidden activations fed to the output layer ``fc3``: (N, 4, L) -> (N, 1000)."""
        if x.ndim != 3 or x.shape[1] != 4 or x.shape[2] != self.length:
            raise TisfmError(f"AITAC input must have shape (N, 4, {self.length}), got {tuple(x.shape)}.")
        x = x.to(self.fc1.weight.dtype).unsqueeze(1)
        x = self.layer3(self.layer2(self.layer1(x)))
        x = torch.flatten(x, start_dim=1)
        x = self.dropout(self.activation(self.fc1(x)))
        return self.dropout(self.activation(self.fc2(x)))

    def forward(self, x):
        """Predict outputs for one-hot sequences.

        Parameters
        ----------
        x : torch.Tensor
            One-hot sequences, shape (N, 4, L) with L = ``length``, A,C,G,T order; integer inputs
            are cast to the model's dtype.

        Returns
        -------
        torch.Tensor
            Predictions, shape (N, n_outputs).
        """
        return self.fc3(self.features(x))
