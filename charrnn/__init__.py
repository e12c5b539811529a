"""charrnn: a character-level GRU language model you can watch while it writes."""

__version__ = "0.1.0"

from .bigram import BigramLanguageModel
from .decode import DecodeUpdate
from .gates import Trace
from .loading import load_model
from .model import CharRNN, ModelLoadError
from .sampling import DecodeSettings, filter_probs
from .vocab import UnknownCharactersError, Vocab

__all__ = ["__version__", "BigramLanguageModel", "CharRNN", "DecodeSettings", "DecodeUpdate", "ModelLoadError", "Trace",
           "UnknownCharactersError", "Vocab", "filter_probs", "load_model"]
