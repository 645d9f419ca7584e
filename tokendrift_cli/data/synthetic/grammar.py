"""The grammar of the synthetic language: word classes, verbs, and the automaton's edges.

Each state has weighted edges; an edge emits a word class (split among its words by Zipf
weights when the automaton is built) or one literal word, and leads to the next state. The
states carry agreement: the subject fixes the verb form, determiners agree with nouns, and
each verb admits only some objects.
"""

from __future__ import annotations

from dataclasses import dataclass

EOS, UNK, MASK = "<eos>", "[UNK]", "[MASK]"

# Word classes. Within a class, word i has Zipf weight 1/(i+1): some words are frequent.
WORD_CLASSES: dict[str, list[str]] = {
    "I": ["I"],
    "you": ["you"],
    "pron_3sg": ["he", "she", "it"],
    "pron_pl": ["we", "they"],
    "det_any": ["the", "my", "your", "our"],
    "det_sg": ["a", "one", "every"],
    "det_pl": ["some", "many", "two", "three"],
    "adj": ["big", "small", "old", "young", "happy", "quiet", "clever"],
    "noun_sg": ["cat", "dog", "teacher", "friend", "child", "bird", "farmer", "student", "doctor"],
    "noun_pl": ["cats", "dogs", "teachers", "friends", "children", "birds", "farmers", "students", "doctors"],
    "food": ["bread", "apples", "rice", "soup", "fish", "cake", "eggs"],
    "drink": ["water", "tea", "coffee", "milk", "juice"],
    "readable": ["books", "letters", "poems", "stories", "news"],
    "game": ["tennis", "chess", "football", "music", "cards"],
    "adverb": ["today", "often", "now", "again", "slowly"],
    "place_at": ["home", "school", "night", "work"],
    "place_in": ["park", "garden", "morning", "city"],
}

# Verbs: (base form, third-person singular form, what may follow).
VERBS: list[tuple[str, str, str]] = [
    ("like", "likes", "obj_like"),
    ("eat", "eats", "obj_food"),
    ("drink", "drinks", "obj_drink"),
    ("read", "reads", "obj_read"),
    ("play", "plays", "obj_game"),
    ("see", "sees", "obj_np"),
    ("want", "wants", "obj_want"),
    ("sleep", "sleeps", "after_vp"),
    ("run", "runs", "after_vp"),
    ("sing", "sings", "after_vp"),
    ("walk", "walks", "after_vp"),
]


@dataclass(frozen=True)
class Edge:
    state: str
    emits: str  # a word class, or a literal word written as "=word"
    next_state: str
    weight: float


def _noun_phrase(prefix: str, then_sg: str, then_pl: str) -> list[Edge]:
    """Determiner, optional adjective, noun — with determiner–noun number agreement."""
    edges = []
    for det, numbers in (("det_any", ("sg", "pl")), ("det_sg", ("sg",)), ("det_pl", ("pl",))):
        det_state = f"{prefix}_{det}"
        for adjective in (False, True):
            here = det_state + ("_adj" if adjective else "")
            if not adjective:
                edges.append(Edge(here, "adj", det_state + "_adj", 0.3))
            for number in numbers:
                edges.append(Edge(here, f"noun_{number}", then_sg if number == "sg" else then_pl, 1.0))
    return edges


def _subject(state: str, scale: float) -> list[Edge]:
    """How a sentence starts: a pronoun or a noun phrase, which fixes the verb form."""
    edges = [
        Edge(state, "I", "verb_base", 1.0 * scale),
        Edge(state, "you", "verb_base", 0.6 * scale),
        Edge(state, "pron_3sg", "verb_3sg", 1.6 * scale),
        Edge(state, "pron_pl", "verb_base", 1.0 * scale),
    ]
    for det, weight in (("det_any", 1.6), ("det_sg", 0.6), ("det_pl", 0.6)):
        edges.append(Edge(state, det, f"subj_{det}", weight * scale))
    return edges


def default_edges(p_eos: float = 0.25) -> list[Edge]:
    edges = _subject("doc", 1.0) + _noun_phrase("subj", "verb_3sg", "verb_base")
    for base, third, then in VERBS:
        edges += [Edge("verb_base", f"={base}", then, 1.0), Edge("verb_3sg", f"={third}", then, 1.0)]
    edges += [
        Edge("obj_food", "food", "after_vp", 1.0),
        Edge("obj_drink", "drink", "after_vp", 1.0),
        Edge("obj_read", "readable", "after_vp", 1.0),
        Edge("obj_game", "game", "after_vp", 1.0),
        Edge("obj_want", "food", "after_vp", 1.0),
        Edge("obj_want", "drink", "after_vp", 0.7),
        Edge("obj_want", "game", "after_vp", 0.5),
        Edge("obj_like", "food", "after_vp", 0.6),
        Edge("obj_like", "game", "after_vp", 1.0),
        Edge("obj_like", "det_any", "obj_det_any", 0.8),
        Edge("obj_np", "det_any", "obj_det_any", 1.0),
        Edge("obj_np", "det_sg", "obj_det_sg", 0.4),
        Edge("obj_np", "det_pl", "obj_det_pl", 0.4),
    ]
    edges += _noun_phrase("obj", "after_vp", "after_vp")
    edges += [
        Edge("after_vp", "=.", "end", 1.0),
        Edge("after_vp", "adverb", "after_adv", 0.5),
        Edge("after_vp", "=at", "at", 0.25),
        Edge("after_vp", "=in", "in", 0.25),
        Edge("at", "place_at", "after_adv", 1.0),
        Edge("in", "=the", "in_the", 1.0),
        Edge("in_the", "place_in", "after_adv", 1.0),
        Edge("after_adv", "=.", "end", 1.0),
        Edge("end", f"={EOS}", "doc", p_eos),
    ]
    edges += _subject("end", 1.0 - p_eos)
    return edges


def expand(emits: str, classes: dict[str, list[str]]) -> list[str]:
    """The words an edge emits: its class's members, or the literal word after "="."""
    return [emits[1:]] if emits.startswith("=") else classes[emits]
