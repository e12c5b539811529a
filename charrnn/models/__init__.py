"""Models: the Hub layout every model is saved and loaded in (base, loading, with each config.json field checked in
config), the character-level GRU (gru) and LSTM (lstm) on what they share (recurrent), the bigram baseline (bigram), your own char-RNN checkpoint converted
(convert), publishing to the Hub (publish) and where the shipped models are (shipped). Loading builds whichever
model a config.json names: each model class registers itself, and importing this package imports them all."""

from .gru import CharRNN  # noqa: I001 (the GRU first: it is the default model type, listed first in messages)
from .lstm import CharLSTM
from .bigram import BigramLanguageModel
from .loading import ModelLoadError, load_model

__all__ = ["BigramLanguageModel", "CharLSTM", "CharRNN", "ModelLoadError", "load_model"]
