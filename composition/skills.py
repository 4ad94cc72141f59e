"""The demo's skills: tasks in plain English that the real base model (SmolLM2-135M-Instruct) gets wrong.

Each skill generates items, a user's chat message and the exact expected reply, from a seeded random
generator. Every possible prompt of a skill belongs to exactly one split, decided by the hash of the prompt
text (one in five is held out), so no training set, whatever its seed or size, ever contains a held-out
prompt. GENERAL holds plain questions the base model already answers well; a router must leave them right.

The one metric rule is `is_correct`: a skill's reply must equal the answer after trimming surrounding
whitespace; a GENERAL reply must contain the answer, case-insensitively. `heldout_sha256` names a held-out
set by its content, so an evaluation can record which set it ran.

Pure Python: no Django, no torch.
"""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from typing import Callable

GENERAL_SKILL = "general"
HELDOUT_ONE_IN = 5  # one possible prompt in five is held out


@dataclass(frozen=True)
class Item:
    skill: str
    prompt: str   # the user's chat message, in plain English
    answer: str   # the exact expected reply


def is_heldout_prompt(prompt: str) -> bool:
    """The split of a prompt, fixed by its text alone."""
    digest = hashlib.sha256(prompt.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % HELDOUT_ONE_IN == 0


@dataclass(frozen=True)
class Skill:
    name: str
    description: str
    example_prompt: str
    example_answer: str
    make: Callable[[random.Random], tuple[str, str]]  # one random (prompt, answer)
    max_tokens: int = 16  # enough new tokens for any answer of the skill

    def train_items(self, n: int, seed: int = 0) -> list[Item]:
        return self._items(n, seed, heldout=False)

    def heldout_items(self, n: int, seed: int = 1) -> list[Item]:
        return self._items(n, seed, heldout=True)

    def _items(self, n: int, seed: int, *, heldout: bool) -> list[Item]:
        split = "heldout" if heldout else "train"
        rng = random.Random(f"{self.name}:{split}:{seed}")
        items: dict[str, Item] = {}
        attempts = 0
        while len(items) < n:
            attempts += 1
            if attempts > 200 * n + 1000:
                raise ValueError(f"skill {self.name!r} cannot produce {n} distinct {split} items")
            prompt, answer = self.make(rng)
            if is_heldout_prompt(prompt) == heldout and prompt not in items:
                items[prompt] = Item(skill=self.name, prompt=prompt, answer=answer)
        return list(items.values())


# --- the generators ---------------------------------------------------------------------------------------

def _add(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randint(10, 99), rng.randint(10, 99)
    return f"What is {a} + {b}?", str(a + b)


WORDS = (
    "apple river stone cloud tiger window garden silver candle forest pencil bottle rocket planet mirror "
    "basket violin lemon castle dragon harbor jacket meadow orange pillow rabbit saddle tunnel valley wagon "
    "anchor butter carpet dinner engine feather guitar hammer island jungle kitten ladder marble needle "
    "ocean parrot quilt ribbon sugar tomato umbrella velvet walnut yellow zebra bridge camera desert "
    "flower ginger honey insect jelly kettle lizard monkey nickel onion pepper"
).split()


def _reverse(rng: random.Random) -> tuple[str, str]:
    words = rng.sample(WORDS, rng.randint(3, 4))
    return f"Reverse the order of these words: {', '.join(words)}", ", ".join(reversed(words))


UNITS = [  # (from, to, factor, answer unit)
    ("kilometres", "metres", 1000, "m"),
    ("metres", "centimetres", 100, "cm"),
    ("centimetres", "millimetres", 10, "mm"),
    ("kilograms", "grams", 1000, "g"),
    ("litres", "millilitres", 1000, "mL"),
]


def _convert(rng: random.Random) -> tuple[str, str]:
    source, target, factor, symbol = rng.choice(UNITS)
    value = rng.randint(2, 99)
    return f"Convert {value} {source} to {target}.", f"{value * factor} {symbol}"


NAMES = ("Maria Ahmed Chen Olga Pedro Aisha Lukas Priya Tom Yuki Sara Omar Elena Ivan Nora Kofi Lena Raj "
         "Sofia Mateo Hana Jonas Amara Leo").split()
CITIES = ("Lisbon Cairo Lima Oslo Dublin Nairobi Madrid Seoul Berlin Quito Rome Vienna Accra Dhaka Paris "
          "Tokyo Prague Manila Havana Warsaw").split()
EXTRACT_SENTENCES = (
    "{name} is {age} years old and lives in {city}.",
    "{name}, aged {age}, lives in {city}.",
    "Living in {city}, {name} turned {age} this year.",
    "{name} moved to {city} at the age of {age}.",
)


def _extract(rng: random.Random) -> tuple[str, str]:
    name, city, age = rng.choice(NAMES), rng.choice(CITIES), rng.randint(18, 90)
    sentence = rng.choice(EXTRACT_SENTENCES).format(name=name, age=age, city=city)
    answer = json.dumps({"name": name, "age": age, "city": city})
    return f"Extract the name, age and city as JSON: {sentence}", answer


PRODUCTS = ("phone laptop blender jacket headset kettle camera backpack lamp watch chair printer mattress "
            "toaster speaker tent drill keyboard monitor vacuum heater stroller umbrella suitcase router").split()
POSITIVE = (
    "works perfectly and I love it", "exceeded all my expectations", "is excellent value for the money",
    "is the best purchase I made this year", "arrived early and works great", "is sturdy, fast and reliable",
    "makes me happy every day", "is wonderful and easy to use", "does everything I hoped for",
    "is beautifully made and I would buy it again",
)
NEGATIVE = (
    "broke after two days", "is a complete waste of money", "stopped working within a week",
    "is cheap junk and I regret buying it", "arrived damaged and support never answered",
    "is slow, noisy and unreliable", "was a huge disappointment", "is terrible and hard to use",
    "does nothing it promised", "fell apart the first time I used it",
)


def _sentiment(rng: random.Random) -> tuple[str, str]:
    product = rng.choice(PRODUCTS)
    label = rng.choice(("positive", "negative"))
    phrase = rng.choice(POSITIVE if label == "positive" else NEGATIVE)
    return f"Is this review positive or negative? \"This {product} {phrase}.\"", label


SKILLS: dict[str, Skill] = {skill.name: skill for skill in [
    Skill("add", "Adds two two-digit numbers and answers with the sum alone.",
          "What is 47 + 38?", "85", _add, max_tokens=6),
    Skill("reverse", "Reverses the order of a list of words and answers with the reversed list alone.",
          "Reverse the order of these words: apple, river, stone", "stone, river, apple", _reverse, max_tokens=24),
    Skill("convert", "Converts a metric quantity to a smaller unit and answers with the number and unit symbol.",
          "Convert 7 kilometres to metres.", "7000 m", _convert, max_tokens=8),
    Skill("extract", "Extracts a person's name, age and city from a sentence as a JSON object.",
          "Extract the name, age and city as JSON: Maria is 34 years old and lives in Lisbon.",
          '{"name": "Maria", "age": 34, "city": "Lisbon"}', _extract, max_tokens=32),
    Skill("sentiment", "Classifies a product review as positive or negative and answers with the one word.",
          "Is this review positive or negative? \"This kettle broke after two days.\"", "negative", _sentiment,
          max_tokens=4),
]}

# Each answered right by the base model alone (greedy, its chat template; checked when this list was made:
# it answered the capitals of Italy and Spain and "What do bees make?" wrong, so they are not here).
GENERAL: list[Item] = [Item(GENERAL_SKILL, prompt, answer) for prompt, answer in [
    ("What is the capital of France?", "Paris"),
    ("What is the capital of Japan?", "Tokyo"),
    ("What is the capital of Germany?", "Berlin"),
    ("What color is the sky on a clear day?", "blue"),
    ("What is the opposite of hot?", "cold"),
]]
GENERAL_MAX_TOKENS = 48

# General questions for teaching a router what is no skill's business (never in GENERAL, which measures it).
GENERAL_ROUTER_EXAMPLES = [
    "Who wrote Romeo and Juliet?", "What is the largest planet in the solar system?",
    "How many legs does a spider have?", "At what temperature does water boil?", "What is the capital of Canada?",
    "Why do leaves change colour in autumn?", "Tell me a fun fact about octopuses.", "What language is spoken in Brazil?",
    "Give me a tip for sleeping better.", "What is photosynthesis?", "Who painted the Mona Lisa?",
    "What is the tallest mountain on Earth?", "Write a short greeting for a birthday card.",
    "What does a thermometer measure?", "Name three primary colours.", "How many continents are there?",
]


def is_correct(item: Item, output: str) -> bool:
    if item.skill == GENERAL_SKILL:
        return item.answer.lower() in output.lower()
    return output.strip() == item.answer.strip()


def heldout_sha256(items: list[Item]) -> str:
    """sha256 of the items as canonical JSON lines (sorted keys, compact), in order, each ending in a newline."""
    lines = "".join(
        json.dumps({"skill": i.skill, "prompt": i.prompt, "answer": i.answer}, sort_keys=True,
                   separators=(",", ":"), ensure_ascii=False) + "\n"
        for i in items
    )
    return hashlib.sha256(lines.encode("utf-8")).hexdigest()


def mixed_heldout_items(n_per_skill: int, seed: int = 1) -> list[Item]:
    """The mixed held-out set: n items of every skill, interleaved skill by skill."""
    per_skill = [skill.heldout_items(n_per_skill, seed) for skill in SKILLS.values()]
    return [item for group in zip(*per_skill) for item in group]


ROUTER_EXAMPLES_PER_SKILL = 12
ROUTER_EXAMPLES_SEED = 7


def router_examples(expert_ids_by_skill: dict[str, str], render: Callable[[str], str] | None = None) -> list[dict]:
    """Labelled queries for a trained router (composition.strategies.routing.TrainedRouter): training prompts
    of each skill (never held-out ones) labelled with its expert's id, and GENERAL_ROUTER_EXAMPLES labelled
    "base" (the base model answers them alone). Each query appears as the user's message (a completions
    prompt) and, when `render` is given, as the chat-rendered prompt that a chat request becomes."""
    labelled = [(item.prompt, expert_id) for skill, expert_id in expert_ids_by_skill.items()
                for item in SKILLS[skill].train_items(ROUTER_EXAMPLES_PER_SKILL, seed=ROUTER_EXAMPLES_SEED)]
    labelled += [(question, "base") for question in GENERAL_ROUTER_EXAMPLES]
    examples = [{"text": text, "expert": label} for text, label in labelled]
    if render is not None:
        examples += [{"text": render(text), "expert": label} for text, label in labelled]
    return examples


def demo_strategies(expert_ids_by_skill: dict[str, str], examples: list[dict]) -> dict[str, tuple[str, dict]]:
    """The demo's composed systems as (strategy, config) over the skills' experts, with `examples` from
    router_examples. The cascade's threshold and the merge's method were chosen on the first 3 held-out items
    per skill (seed 1) among thresholds -0.02 to -0.5 and five merges, and checked on 4 others (seed 2); see
    bench/results/demo_goals.md. A cascade that falls back to an expert answers general questions with
    that expert's guess; averaging five task adapters dilutes each one to a fifth."""
    ids = list(expert_ids_by_skill.values())
    return {
        "router": ("trained_router", {"examples": examples, "mode": "top1"}),
        "mixture": ("trained_router", {"examples": examples, "mode": "mixture"}),
        "cascade": ("cascade", {"order": ids, "threshold": -0.1, "fallback": "base"}),
        "merge": ("merge", {"method": "ties", "density": 0.5, "scale": 3}),
    }
