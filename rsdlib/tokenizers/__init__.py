"""Action tokenizers behind one interface: RFSQ (coarse to fine), FAST and binning.

Every tokenizer fits on chunks (B, H, A) in environment units, encodes them to token ids,
decodes ids back to environment units, and saves to / loads from a folder (JSON config,
``normaliser.json``, and safetensors weights or a BPE vocabulary).
"""

from rsdlib.tokenizers.base import ActionTokenizer, TokenIds, load_tokenizer
from rsdlib.tokenizers.binning import BinningTokenizer
from rsdlib.tokenizers.errors import TokenizerFileError
from rsdlib.tokenizers.fast import FASTTokenizer, MalformedTokens
from rsdlib.tokenizers.normaliser import Normaliser
from rsdlib.tokenizers.rfsq import RFSQTokenizer, digits_to_index, index_to_digits

__all__ = [
    "ActionTokenizer", "BinningTokenizer", "FASTTokenizer", "MalformedTokens", "Normaliser", "RFSQTokenizer",
    "TokenIds", "TokenizerFileError", "digits_to_index", "index_to_digits", "load_tokenizer",
]  # fmt: skip
