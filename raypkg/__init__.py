"""raypkg: how model capacity and regularization change overfitting, on HIGGS, with Ray."""

__version__ = "0.1.0"
