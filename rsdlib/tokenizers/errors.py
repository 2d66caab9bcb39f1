"""What a damaged tokenizer file raises (every module of the package, the normaliser included)."""

REGENERATE = (
    "restore the file (from the checkpoint folder it came with) or regenerate the tokenizer: "
    "re-run notebooks/02_action_tokenizers.ipynb"
)


class TokenizerFileError(ValueError):
    """A saved tokenizer's file is truncated, corrupt, or not what ``ActionTokenizer.save`` wrote.

    The message names the file and says how to get a good one back.
    """
