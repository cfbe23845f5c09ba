"""A character-level tokenizer for the testbed, built with ``tokenizers`` and saved in HF format.

Every character of the task's charset is one token, so tokenization is exact and lossless
(spaces and newlines included) and ``decode(encode(s)) == s`` for every string over the charset.
The tokenizer is a plain :class:`~transformers.PreTrainedTokenizerFast`, so it saves with
``save_pretrained`` and loads back with ``AutoTokenizer.from_pretrained`` like any HF tokenizer.
"""

from __future__ import annotations

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
#: Special tokens, in id order (pad = 0, bos = 1, eos = 2, unk = 3); characters follow.
SPECIAL_TOKENS: tuple[str, ...] = (PAD, BOS, EOS, UNK)


def char_vocab(charset: str) -> dict[str, int]:
    """Token → id: the special tokens first, then each distinct character in charset order.

    Args:
        charset: every character prompts and completions may contain (duplicates are ignored).
    """
    if not isinstance(charset, str) or not charset:
        raise ValueError(f"charset must be a non-empty string, got {charset!r}")
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in dict.fromkeys(charset):  # dedupe, keep first-seen order (stable ids)
        vocab.setdefault(ch, len(vocab))
    return vocab


def build_char_tokenizer(charset: str) -> PreTrainedTokenizerFast:
    """Build a lossless char-level tokenizer over ``charset`` with ``<pad> <bos> <eos> <unk>``.

    Encoding prepends ``<bos>`` (like Llama tokenizers) and never appends ``<eos>``; padding is on
    the left, as batched generation needs. Characters outside the charset become ``<unk>``.

    Args:
        charset: every character the tokenizer must represent; order fixes the ids.

    Returns:
        A ``PreTrainedTokenizerFast`` whose ``decode(ids, skip_special_tokens=True)`` inverts
        ``encode`` exactly for any string over ``charset``.
    """
    vocab = char_vocab(charset)
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    # One pre-token per character; ``[\s\S]`` also matches newlines, which ``.`` would not.
    # No normalizer: nothing is lower-cased, stripped or unicode-normalized.
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    # Fuse joins tokens with no separator (the default decoder would insert spaces).
    backend.decoder = decoders.Fuse()
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        padding_side="left",
        # Keep text like "<eos>" typed inside a prompt as characters, never as the special token.
        split_special_tokens=True,
        # The HF default clean-up would delete the space in " ." and friends: not lossless.
        clean_up_tokenization_spaces=False,
    )
