"""The demo mix's text: a small, deterministic, English-like corpus the project generates itself.

A made-up valley of towns and people with fixed facts (who lives where, keeps
which pet, likes which food), told three ways: short stories (JSON Lines),
town guides (Markdown with YAML front matter) and arithmetic worksheets
(plain text). The facts repeat across documents, so even a tiny model
visibly learns: tiny-cpu's held-out loss falls from a uniform guess (6.93)
to below 3 within its 123k tokens.

The demo mix also brings its own tokenizer: a byte-level BPE trained on
this text (tokenizer/tokenizer.json). Its 1,024 tokens cover the demo's
words whole, so a tiny model's output layer is 50 times smaller than with
GPT-2's 50,257 tokens and the demo trains that much faster on a CPU, with
no download. A uniform guess over 1,024 tokens is a loss of ln(1024) = 6.93.

The files under profiles/mixes/demo/ are this module's output; regenerate them with
    python -m engine.demo_text profiles/mixes/demo
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

SEED = 2024

TOWNS = {
    "Alderbrook": ("north", "the Silver River", "apples", "Monday"),
    "Bramblewick": ("east", "the Willow Stream", "cheese", "Tuesday"),
    "Cobblestone": ("south", "the Amber River", "pottery", "Wednesday"),
    "Dunmere": ("west", "the Grey Lake", "wool", "Thursday"),
    "Elmstead": ("north", "the Silver River", "honey", "Friday"),
    "Foxhollow": ("east", "the Copper Brook", "bread", "Saturday"),
    "Glenwater": ("south", "the Amber River", "fish", "Monday"),
    "Hartfield": ("west", "the Grey Lake", "timber", "Tuesday"),
}

# name: (pronoun, town, job, pet, food, colour, hobby)
PEOPLE = {
    "Anna": ("she", "Alderbrook", "baker", "cat", "apple pie", "green", "painting"),
    "Ben": ("he", "Bramblewick", "farmer", "dog", "cheese soup", "blue", "fishing"),
    "Clara": ("she", "Cobblestone", "potter", "parrot", "bean stew", "red", "singing"),
    "David": ("he", "Dunmere", "weaver", "goat", "lamb pie", "grey", "chess"),
    "Ella": ("she", "Elmstead", "beekeeper", "rabbit", "honey cake", "yellow", "dancing"),
    "Finn": ("he", "Foxhollow", "miller", "horse", "fresh bread", "brown", "running"),
    "Grace": ("she", "Glenwater", "fisher", "duck", "fried fish", "silver", "swimming"),
    "Henry": ("he", "Hartfield", "carpenter", "owl", "mushroom pie", "orange", "carving"),
    "Iris": ("she", "Alderbrook", "teacher", "hedgehog", "pear tart", "purple", "reading"),
    "Jack": ("he", "Bramblewick", "shepherd", "sheepdog", "barley soup", "white", "whistling"),
    "Kate": ("she", "Cobblestone", "doctor", "tortoise", "plum jam", "pink", "gardening"),
    "Leo": ("he", "Dunmere", "blacksmith", "crow", "black bread", "black", "climbing"),
    "Mia": ("she", "Elmstead", "gardener", "mouse", "carrot soup", "gold", "knitting"),
    "Noah": ("he", "Foxhollow", "baker", "cat", "cherry pie", "red", "singing"),
    "Olive": ("she", "Glenwater", "sailor", "gull", "oyster stew", "blue", "rowing"),
    "Paul": ("he", "Hartfield", "builder", "dog", "beef stew", "green", "drawing"),
}

NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
                "nineteen", "twenty"]

SEASONS = ["spring", "summer", "autumn", "winter"]
WEATHER = {"spring": "soft rain", "summer": "warm sun", "autumn": "cold wind", "winter": "deep snow"}
TIMES = ["early one morning", "one afternoon", "late one evening", "on a quiet day"]


def _poss(pronoun: str) -> str:
    return "her" if pronoun == "she" else "his"


def _obj(pronoun: str) -> str:
    return "her" if pronoun == "she" else "him"


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _intro(name: str) -> str:
    p, town, job, pet, food, colour, hobby = PEOPLE[name]
    return (f"{name} is a {job} who lives in {town}. {_cap(p)} has a {pet}, and {_poss(p)} favourite food is {food}. "
            f"{_cap(_poss(p))} favourite colour is {colour}, and in the evenings {p} enjoys {hobby}.")


def story(rng: random.Random) -> tuple[str, str]:
    name, friend = rng.sample(sorted(PEOPLE), 2)
    p, town, job, pet, food, colour, hobby = PEOPLE[name]
    fp, ftown, fjob, fpet, ffood, fcolour, fhobby = PEOPLE[friend]
    region, river, product, market = TOWNS[town]
    season = rng.choice(SEASONS)
    when = rng.choice(TIMES)
    gift = rng.choice([food, product, f"a {colour} scarf", f"a basket of {TOWNS[ftown][2]}"])
    lines = [
        f"{_cap(when)} in {season}, {name} the {job} woke up in {town}.",
        f"The {WEATHER[season]} was over the {region} of the valley, and {river} ran past the houses.",
        f"{_cap(p)} fed {_poss(p)} {pet} and said, \"Today I will visit {friend} in {ftown}.\"",
    ]
    if town == ftown:
        lines.append(f"{friend} lives in {town} too, so the walk was short.")
    else:
        lines.append(f"{ftown} is a town in the {TOWNS[ftown][0]} of the valley, by {TOWNS[ftown][1]}.")
        lines.append(f"On the way, {name} passed the market, because it was {market} and the market of {town} "
                     f"is on {market}.")
    lines.append(f"{name} brought {gift} as a present.")
    lines.append(f"{friend} the {fjob} opened the door with {_poss(fp)} {fpet} at {_poss(fp)} feet.")
    lines.append(f"\"Hello, {name}!\" said {friend}. \"Come in. I have made {ffood}.\"")
    lines.append(f"They ate the {ffood} together, and {name} told {friend} about {_poss(p)} {pet}.")
    if hobby == fhobby:
        lines.append(f"After lunch they went {hobby} together, because they both love {hobby}.")
    else:
        lines.append(f"After lunch {friend} showed {name} how to enjoy {fhobby}, "
                     f"and {name} showed {friend} how to enjoy {hobby}.")
    count = rng.randint(2, 9)
    lines.append(f"{name} stayed until the {rng.choice(['sun set', 'moon rose', 'stars came out'])}, "
                 f"then walked home with a bag of {TOWNS[ftown][2]} and {NUMBER_WORDS[count]} new stories to tell.")
    lines.append(f"That night {name} said to {_poss(p)} {pet}, \"{friend} is a good friend.\"")
    lines.append("The end.")
    title = f"{name} visits {friend}"
    return title, " ".join(lines)


def town_guide(town: str) -> str:
    region, river, product, market = TOWNS[town]
    residents = [n for n in sorted(PEOPLE) if PEOPLE[n][1] == town]
    neighbours = [t for t in sorted(TOWNS) if TOWNS[t][0] == region and t != town]
    parts = [
        "---",
        f"title: A guide to {town}",
        f"region: {region}",
        "tags: [demo, towns]",
        "---",
        "",
        f"# {town}",
        "",
        f"{town} is a town in the {region} of the valley. It stands by {river}. "
        f"{town} is famous for its {product}, and its market is held every {market}.",
        "",
        "## People",
        "",
    ]
    for name in residents:
        parts.append(f"- {_intro(name)}")
    parts += ["", "## Neighbours", ""]
    for other in neighbours:
        parts.append(f"{other} is also in the {region} of the valley. {other} is famous for its {TOWNS[other][2]}.")
    parts += ["", "## Seasons", ""]
    for season in SEASONS:
        parts.append(f"In {season}, {town} has {WEATHER[season]}, and the people of {town} sell {product} "
                     f"at the market on {market}.")
    parts += ["", "## Questions", ""]
    for name in residents:
        p = PEOPLE[name]
        parts.append(f"Q: Where does {name} live? A: {name} lives in {town}.")
        parts.append(f"Q: What is {name}'s job? A: {name} is a {p[2]}.")
        parts.append(f"Q: What pet does {name} have? A: {name} has a {p[3]}.")
    return "\n".join(parts) + "\n"


def worksheet(rng: random.Random, number: int) -> str:
    lines = [f"Worksheet {number}", ""]
    for _ in range(40):
        a, b = rng.randint(0, 10), rng.randint(0, 10)
        kind = rng.random()
        if kind < 0.4:
            lines.append(f"{_cap(NUMBER_WORDS[a])} plus {NUMBER_WORDS[b]} is {NUMBER_WORDS[a + b]}. ({a} + {b} = {a + b})")
        elif kind < 0.7 and a >= b:
            lines.append(f"{_cap(NUMBER_WORDS[a])} minus {NUMBER_WORDS[b]} is {NUMBER_WORDS[a - b]}. ({a} - {b} = {a - b})")
        else:
            name = rng.choice(sorted(PEOPLE))
            pet = PEOPLE[name][3]
            lines.append(f"{name} has {NUMBER_WORDS[a]} apples and buys {NUMBER_WORDS[b]} more, so {name} has "
                         f"{NUMBER_WORDS[a + b]} apples. {name}'s {pet} watches.")
    start = rng.randint(0, 10)
    lines.append("")
    lines.append("Counting: " + ", ".join(NUMBER_WORDS[start:start + 10]) + ".")
    return "\n".join(lines) + "\n"


def generate(n_stories: int = 400, n_worksheets: int = 12) -> dict[str, str]:
    """Relative file name -> content, identical on every call."""
    rng = random.Random(SEED)
    files: dict[str, str] = {}
    records = []
    for i in range(n_stories):
        title, text = story(rng)
        records.append(json.dumps({"id": i, "title": title, "text": text}, ensure_ascii=False))
    files["stories.jsonl"] = "\n".join(records) + "\n"
    for town in sorted(TOWNS):
        files[f"towns/{town.lower()}.md"] = town_guide(town)
    for n in range(1, n_worksheets + 1):
        files[f"worksheets/worksheet-{n:02d}.txt"] = worksheet(rng, n)
    return files


DEMO_VOCAB = 1024
TOKENIZER_FILE = "tokenizer/tokenizer.json"


def documents(files: dict[str, str]) -> list[str]:
    """The text of every document in generate()'s files, as the mix's readers see it."""
    docs = []
    for rel, content in sorted(files.items()):
        if rel.endswith(".jsonl"):
            docs.extend(json.loads(line)["text"] for line in content.splitlines() if line)
        elif rel.endswith((".md", ".txt")):
            docs.append(content)
    return docs


def train_demo_tokenizer(docs: list[str]) -> str:
    """A byte-level BPE (GPT-2's pre-tokenizer and decoder) of DEMO_VOCAB tokens, as tokenizer.json text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=DEMO_VOCAB, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(docs, trainer)
    return tok.to_str(pretty=True)


def write(out_dir: Path) -> list[Path]:
    out_dir = Path(out_dir)
    files = generate()
    files[TOKENIZER_FILE] = train_demo_tokenizer(documents(files)) + "\n"
    written = []
    for rel, text in files.items():
        path = out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python -m engine.demo_text OUT_DIR", file=sys.stderr)
        sys.exit(2)
    paths = write(Path(sys.argv[1]))
    print(f"wrote {len(paths)} files, {sum(p.stat().st_size for p in paths):,} bytes, to {sys.argv[1]}")
