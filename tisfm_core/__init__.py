"""tiSFM: a totally interpretable sequence-to-function model.

The package holds all the math (motifs, data, model, training, analyses, attribution); the
Streamlit pages only draw what it computes.
"""

__version__ = "0.1.0"

from .errors import TisfmError

__all__ = ["TisfmError", "__version__"]
