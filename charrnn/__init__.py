"""charrnn: a character-level GRU language model you can watch while it writes."""

from .decode import DecodeUpdate
from .gates import Trace
from .loading import load_model
from .model import CharRNN, ModelLoadError
from .sampling import DecodeSettings, filter_probs
from .vocab import UnknownCharactersError, Vocab

__all__ = ["CharRNN", "DecodeSettings", "DecodeUpdate", "ModelLoadError", "Trace", "UnknownCharactersError",
           "Vocab", "filter_probs", "load_model"]
