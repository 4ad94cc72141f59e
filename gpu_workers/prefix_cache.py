"""The key/value cache of prompts already prefilled, so that a prompt which starts like an earlier one on the same
adapter row prefills only its new tokens.

Most prompts a model serves open the same way: the chat template's system prompt (three quarters of a short
SmolLM2 chat prompt), a few-shot header, a strategy's fixed instructions. A token's keys and values depend only
on the tokens up to it, their positions and the adapters of its row, so an earlier prompt's cache serves every
later prompt on the same row key (its expert, or its adapters and their weights) for their common prefix.

Entries are whole prompts' caches [layers] x (keys, values) of shape [kv_heads, tokens, head_dim], least recently
used evicted first within a byte budget. A lookup takes the longest common prefix with any entry of the row key.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field

import torch

LayerKV = tuple[torch.Tensor, torch.Tensor]


@dataclass
class PrefixHit:
    """The cached keys and values of a prompt's first `length` tokens (length 0: nothing cached)."""

    length: int
    layers: list[LayerKV] = field(default_factory=list)


@dataclass
class PrefixCacheStats:
    lookups: int = 0
    prompt_tokens: int = 0
    reused_tokens: int = 0
    evictions: int = 0


@dataclass
class _Entry:
    row_key: Hashable
    token_ids: tuple[int, ...]
    layers: list[LayerKV]
    bytes: int


def _common_prefix_length(a: tuple[int, ...], b: list[int] | tuple[int, ...]) -> int:
    length = 0
    for x, y in zip(a, b):
        if x != y:
            break
        length += 1
    return length


class PrefixCache:
    def __init__(self, budget_bytes: int):
        self.budget_bytes = max(0, int(budget_bytes))
        self.bytes = 0
        self.stats = PrefixCacheStats()
        self._entries: OrderedDict[tuple[Hashable, tuple[int, ...]], _Entry] = OrderedDict()  # least recent first

    @property
    def enabled(self) -> bool:
        return self.budget_bytes > 0

    def __len__(self) -> int:
        return len(self._entries)

    def cached_length(self, row_key: Hashable, token_ids: list[int]) -> int:
        """How many of the prompt's tokens a lookup would reuse (at most all but the last, which must run to
        give the next token's logits)."""
        return self._longest(row_key, token_ids)[1]

    def lookup(self, row_key: Hashable, token_ids: list[int]) -> PrefixHit:
        """The longest cached prefix of token_ids on this row key (never the whole prompt)."""
        self.stats.lookups += 1
        self.stats.prompt_tokens += len(token_ids)
        best, length = self._longest(row_key, token_ids)
        if best is None or length <= 0:
            return PrefixHit(0)
        self._entries.move_to_end((best.row_key, best.token_ids))
        self.stats.reused_tokens += length
        return PrefixHit(length, [(keys[:, :length], values[:, :length]) for keys, values in best.layers])

    def _longest(self, row_key: Hashable, token_ids: list[int]) -> tuple[_Entry | None, int]:
        """The entry of this row key sharing the longest prefix with token_ids, and that length (capped at all
        but the last token)."""
        best, length = None, 0
        for (key, _ids), entry in self._entries.items():
            if key == row_key:
                common = _common_prefix_length(entry.token_ids, token_ids)
                if common > length:
                    best, length = entry, common
        return best, min(length, len(token_ids) - 1)

    def store(self, row_key: Hashable, token_ids: list[int], layers: list[LayerKV]) -> None:
        """Keep a prompt's keys and values (each [kv_heads, len(token_ids), head_dim]; copied). An entry whose
        tokens are a prefix of these is dropped: the new one serves every lookup it served."""
        if not self.enabled or not token_ids:
            return
        ids = tuple(token_ids)
        size = sum(keys.numel() * keys.element_size() + values.numel() * values.element_size()
                   for keys, values in layers)
        if size > self.budget_bytes:
            return
        for key in [k for k, entry in self._entries.items()
                    if k[0] == row_key and len(entry.token_ids) <= len(ids) and ids[:len(entry.token_ids)] == entry.token_ids]:
            self._remove(key)
        if any(k[0] == row_key and entry.token_ids[:len(ids)] == ids for k, entry in self._entries.items()):
            return  # a longer entry already holds all of it
        self._entries[(row_key, ids)] = _Entry(row_key, ids, [(k.clone(), v.clone()) for k, v in layers], size)
        self.bytes += size
        while self.bytes > self.budget_bytes:
            self._remove(next(iter(self._entries)))
            self.stats.evictions += 1

    def forget(self, expert_id: str) -> None:
        """Drop every entry whose row key names this expert (its adapter changed)."""
        for key in [k for k in self._entries if expert_id in _experts_of(k[0])]:
            self._remove(key)

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0

    def _remove(self, key) -> None:
        entry = self._entries.pop(key)
        self.bytes -= entry.bytes


def _experts_of(row_key: Hashable) -> set:
    """Row keys are (expert_id,) or (("expert", weight), ...) for a row that mixes adapters."""
    experts = set()
    for part in row_key if isinstance(row_key, tuple) else (row_key,):
        experts.add(part[0] if isinstance(part, tuple) else part)
    return experts
