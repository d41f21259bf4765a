"""Loss-mask helpers: each model turn's first generated token (the multi-turn decision)."""

import torch

from mgpo.masks import turn_starts


def test_turn_starts_marks_the_first_generated_token_of_each_turn():
    # prompt, turn 1 (3 tokens), injected crop turn, turn 2 (2 tokens), padding
    mask = torch.tensor([[False, False, True, True, True, False, False, True, True, False]])
    assert turn_starts(mask).nonzero()[:, 1].tolist() == [2, 7]
    assert not turn_starts(torch.zeros(2, 4, dtype=torch.bool)).any()
