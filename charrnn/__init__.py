"""charrnn: a character-level GRU language model you can watch while it writes."""

__version__ = "0.1.0"

from .decoding.loop import DecodeUpdate
from .decoding.sampling import DecodeSettings, filter_probs
from .decoding.trace import Trace
from .models import BigramLanguageModel, CharRNN, ModelLoadError, load_model
from .vocab import UnknownCharactersError, Vocab

__all__ = ["__version__", "BigramLanguageModel", "CharRNN", "DecodeSettings", "DecodeUpdate", "ModelLoadError", "Trace",
           "UnknownCharactersError", "Vocab", "filter_probs", "load_model"]
