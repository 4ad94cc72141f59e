"""A held-out suite for tests with composition.skills' interface (settings.EVALUATION_SUITE points here).
Tests fill SKILLS and GENERAL through `define`, then `clear` them."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Item:
    skill: str
    prompt: str
    answer: str


@dataclass
class Skill:
    name: str
    items: list[Item] = field(default_factory=list)
    max_tokens: int = 4

    def heldout_items(self, n: int, seed: int = 1) -> list[Item]:
        return self.items[:n]


SKILLS: dict[str, Skill] = {}
GENERAL: list[Item] = []
GENERAL_MAX_TOKENS = 4


def define(skills: dict[str, list[tuple[str, str]]], general: list[tuple[str, str]]) -> None:
    clear()
    for name, pairs in skills.items():
        SKILLS[name] = Skill(name, [Item(name, prompt, answer) for prompt, answer in pairs])
    GENERAL.extend(Item("general", prompt, answer) for prompt, answer in general)


def clear() -> None:
    SKILLS.clear()
    GENERAL.clear()


def is_correct(item: Item, output: str) -> bool:
    return output.strip() == item.answer.strip()


def heldout_sha256(items: list[Item]) -> str:
    lines = "".join(json.dumps({"skill": i.skill, "prompt": i.prompt, "answer": i.answer}, sort_keys=True,
                               separators=(",", ":")) + "\n" for i in items)
    return hashlib.sha256(lines.encode()).hexdigest()
