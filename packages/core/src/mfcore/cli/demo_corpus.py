"""A small English corpus written by mfcore itself, for the demo and tests: no download needed.

Sentences come from a tiny grammar with a fixed seed, so a model trained on them for a minute
visibly learns their shape (subject, verb, object, full stop), while an untrained one babbles.
"""
from __future__ import annotations

import random
from typing import List

NAMES = ["Anna", "Ben", "Clara", "David", "Emma", "Felix", "Grace", "Hugo", "Iris", "Jack"]
ANIMALS = ["cat", "dog", "bird", "horse", "rabbit", "fox", "duck", "goat"]
COLORS = ["red", "green", "blue", "yellow", "white", "black", "brown"]
PLACES = ["garden", "river", "forest", "kitchen", "market", "school", "park", "village"]
THINGS = ["apple", "book", "ball", "cup", "hat", "kite", "letter", "bread"]
VERBS_PAST = ["found", "saw", "liked", "carried", "painted", "wanted", "shared"]
WEATHER = ["sunny", "cold", "warm", "rainy", "windy", "quiet"]
TEMPLATES = [
    "{name} saw a {color} {animal} in the {place}.",
    "The {animal} ran to the {place} with {name}.",
    "{name} {verb} a {color} {thing} at the {place}.",
    "It was {weather} in the {place}, so {name} stayed home.",
    "The {color} {animal} and the {animal2} played in the {place}.",
    "{name} gave the {thing} to {name2}.",
    "Every morning {name} walks to the {place}.",
    "The {thing} on the table is {color}.",
]


def sentence(rng: random.Random) -> str:
    return rng.choice(TEMPLATES).format(
        name=rng.choice(NAMES), name2=rng.choice(NAMES), animal=rng.choice(ANIMALS),
        animal2=rng.choice(ANIMALS), color=rng.choice(COLORS), place=rng.choice(PLACES),
        thing=rng.choice(THINGS), verb=rng.choice(VERBS_PAST), weather=rng.choice(WEATHER))


def documents(count: int = 2000, seed: int = 0, sentences_per_document=(3, 8)) -> List[str]:
    """`count` short documents of a few sentences each, the same for the same seed."""
    rng = random.Random(seed)
    low, high = sentences_per_document
    return [" ".join(sentence(rng) for _ in range(rng.randint(low, high))) for _ in range(count)]
