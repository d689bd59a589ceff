"""The CPU tier's text-encoder-shaped prompt encoder."""

from __future__ import annotations

import pytest
import torch

from pdmd_core.cpu_tier.prompts import TokenTableEncoder
from pdmd_core.protocols import PromptEncoder


def test_encodes_strings_to_token_embeddings_and_mask():
    enc = TokenTableEncoder(dim=16, max_len=6, seed=0)
    assert isinstance(enc, PromptEncoder)
    cond = enc.encode(["a handwritten 3", "a point in row 4", ""])
    assert cond.embeds.shape == (3, 6, 16) and cond.mask is not None
    assert cond.mask.sum(dim=1).tolist() == [3, 5, 0]
    assert torch.all(cond.embeds[~cond.mask] == 0)  # padding is zero


def test_deterministic_from_the_seed_and_seed_dependent():
    a, b, c = (TokenTableEncoder(seed=s).encode(["a handwritten 7"]) for s in (1, 1, 2))
    assert torch.equal(a.embeds, b.embeds)
    assert not torch.allclose(a.embeds, c.embeds)


def test_null_is_the_empty_prompt():
    enc = TokenTableEncoder()
    null, empty = enc.null(4), enc.encode([""] * 4)
    assert torch.equal(null.embeds, empty.embeds) and torch.equal(null.mask, empty.mask)
    assert not null.mask.any()


def test_prompts_differ_and_word_order_matters():
    enc = TokenTableEncoder()
    e = enc.encode(["a handwritten 3", "a handwritten 5", "handwritten a 3"]).embeds
    assert not torch.allclose(e[0], e[1]) and not torch.allclose(e[0], e[2])
    # Same words, same prompt: case and spacing do not matter.
    assert torch.equal(enc.encode(["A  Handwritten 3"]).embeds[0], e[0])


def test_unknown_words_share_one_token_and_long_prompts_are_rejected():
    enc = TokenTableEncoder(max_len=3)
    e = enc.encode(["zebra", "giraffe"]).embeds
    assert torch.equal(e[0], e[1])
    with pytest.raises(ValueError, match="at most 3"):
        enc.encode(["a b c d"])
