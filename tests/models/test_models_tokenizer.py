"""The char-level testbed tokenizer: exact round trip, special tokens, left padding, save/load."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from entrolab.models.tokenizer import SPECIAL_TOKENS, build_char_tokenizer, char_vocab

# Spaces, newline, tab, punctuation and the characters of the special-token names themselves.
CHARSET = "0123456789+-*/()=,>:# \n\tabcdeklnopstu<>."


TOK = build_char_tokenizer(CHARSET)


@pytest.fixture(scope="module")
def tok():
    return TOK


@given(st.text(alphabet=CHARSET, max_size=60))
@settings(max_examples=200, deadline=None)
def test_round_trip_any_string_over_charset(s):
    tok = TOK
    ids = tok(s)["input_ids"]
    assert ids[0] == tok.bos_token_id and len(ids) == len(s) + 1  # one token per character, BOS first
    assert tok.decode(ids, skip_special_tokens=True) == s
    assert tok.decode(tok(s, add_special_tokens=False)["input_ids"]) == s


def test_special_token_ids_and_hand_encoding(tok):
    """pad, bos, eos, unk are ids 0..3 and characters follow in charset order: '0' → 4, '1' → 5."""
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    assert tok("10")["input_ids"] == [1, 5, 4]
    assert len(tok) == len(SPECIAL_TOKENS) + len(set(CHARSET))
    assert char_vocab("aba") == {"<pad>": 0, "<bos>": 1, "<eos>": 2, "<unk>": 3, "a": 4, "b": 5}


def test_typed_special_token_text_stays_characters(tok):
    """The text '<eos>' in a prompt is five characters, never the EOS token."""
    ids = tok("<eos>", add_special_tokens=False)["input_ids"]
    assert len(ids) == 5 and tok.eos_token_id not in ids
    assert tok.decode(ids, skip_special_tokens=True) == "<eos>"


def test_unknown_character_is_unk(tok):
    assert tok("1Z", add_special_tokens=False)["input_ids"] == [5, tok.unk_token_id]


def test_left_padding(tok):
    enc = tok(["12", "1"], padding=True)
    assert enc["input_ids"] == [[1, 5, 6], [0, 1, 5]]
    assert enc["attention_mask"] == [[1, 1, 1], [0, 1, 1]]


def test_save_load_round_trip(tok, tmp_path):
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    s = " (1 + 2)\n*3 = <eos>\t. "
    assert loaded(s)["input_ids"] == tok(s)["input_ids"]
    assert loaded.decode(loaded(s)["input_ids"], skip_special_tokens=True) == s
    assert loaded.padding_side == "left"
    assert (loaded.pad_token, loaded.bos_token, loaded.eos_token, loaded.unk_token) == SPECIAL_TOKENS


@pytest.mark.parametrize("bad", ["", None, 3])
def test_bad_charset_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="charset"):
        build_char_tokenizer(bad)
