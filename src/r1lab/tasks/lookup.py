"""Lookup: multi-hop questions over a generated corpus of fictional facts that only the `search` tool can answer.

The world of one seed: fictional people (each works at a company and was born in a city), companies (each has
its headquarters in a city), cities (each in a country) and countries, written as one short document per entity.
`lookup_corpus(seed)` is that world as {id, title, text} rows, the JSONL the `search` tool reads
(`write_lookup_corpus(path, seed)` writes it); it depends on the seed and the corpus-size knobs only, never on
the split or `hops`, so a held-out question's facts are in the same corpus as the training questions'.

A question follows a chain of `hops` relations (person → employer → headquarters city → country). The
demonstration is a tool conversation built by running r1lab.tools' BM25 `search` on the corpus: one call per hop
(the entity's name as the query), the tool's real result, the fact read from it, and the final `Answer: <x>`.
A record carries it twice: `messages` (user, assistant turns with `<tool_call>`s, `{"role": "tool", "name":
"search"}` results, the final assistant turn) and `completion` (the same as one text, each result in a
`<tool_response>` block, as the tagged fallback renders it); `tools` is the search tool's schema, so SFT on
the rows renders them as the multi-turn rollout does. Default reward: `exact` on `answer`.
"""

from __future__ import annotations

import random
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from r1lab.tasks.base import ANSWER_PREFIX, TASKS, Task, format_instruction, require, write_jsonl
from r1lab.tasks.tool_turns import flatten, tool_call_text

_ONSETS = ["b", "br", "d", "dr", "f", "g", "gr", "k", "kr", "l", "m", "n", "p", "r", "s", "st", "t", "tr"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ei", "ou"]
_CODAS = ["", "", "n", "r", "l", "s", "th", "m"]
_FIRST = ["Mira", "Tomas", "Elin", "Oskar", "Lena", "Pavel", "Ines", "Rafe", "Sana", "Idris", "Yara", "Corin"]
_JOBS = ["surveyor", "chemist", "translator", "engineer", "archivist", "pilot", "botanist", "accountant"]
_KINDS = ["Logistics", "Foods", "Textiles", "Robotics", "Press", "Ceramics", "Shipping", "Optics"]
_INDUSTRY = {
    "Logistics": "freight",
    "Foods": "food",
    "Textiles": "textile",
    "Robotics": "robotics",
    "Press": "publishing",
    "Ceramics": "ceramics",
    "Shipping": "shipping",
    "Optics": "optics",
}
# relation -> (the kind it starts from, the kind it leads to)
_RELATIONS = {
    "employer": ("person", "company"),
    "birthplace": ("person", "city"),
    "headquarters": ("company", "city"),
    "country": ("city", "country"),
}
_CHAINS = {  # start kind -> chains of relations, by number of hops
    1: [("employer",), ("birthplace",), ("headquarters",), ("country",)],
    2: [("employer", "headquarters"), ("birthplace", "country"), ("headquarters", "country")],
    3: [("employer", "headquarters", "country")],
}
_QUESTIONS = {
    ("employer",): "Which company does {0} work for?",
    ("birthplace",): "In which city was {0} born?",
    ("headquarters",): "In which city does {0} have its headquarters?",
    ("country",): "In which country is {0}?",
    ("employer", "headquarters"): "In which city does the company that {0} works for have its headquarters?",
    ("birthplace", "country"): "In which country was {0} born?",
    ("headquarters", "country"): "In which country does {0} have its headquarters?",
    ("employer", "headquarters", "country"): (
        "In which country does the company that {0} works for have its headquarters?"
    ),
}
_WANT = {  # what the next search must find, said before the call
    "employer": "which company {0} works for",
    "birthplace": "where {0} was born",
    "headquarters": "where {0} has its headquarters",
    "country": "which country {0} is in",
}
_FACT = {  # the sentence of the entity's document that states the relation
    "employer": "works at {1}",
    "birthplace": "was born in {1}",
    "headquarters": "Its headquarters are in {1}",
    "country": "is a city in {1}",
}


@dataclass
class World:
    """One seed's entities: names by kind, each entity's relations, and the documents."""

    names: dict[str, list[str]]
    facts: dict[str, dict[str, str]]  # entity name -> relation -> entity name
    doc_ids: dict[str, str]  # entity name -> its document id
    docs: list[dict[str, str]]


def _words(rng: random.Random, count: int, taken: set[str]) -> list[str]:
    """`count` new capitalised made-up words, none in `taken` (which grows), so every name is its own token."""
    out: list[str] = []
    while len(out) < count:
        syllables = rng.randint(2, 3)
        word = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables))
        word += rng.choice(_CODAS)
        if word not in taken:
            taken.add(word)
            out.append(word.capitalize())
    return out


def build_world(seed: int, people: int, companies: int, cities: int, countries: int) -> World:
    """The fictional world of `seed` (the same for every split and every `hops`)."""
    rng = random.Random(f"lookup-corpus:{seed}")
    taken = {w.lower() for w in _FIRST}
    country_names = _words(rng, countries, taken)
    city_names = _words(rng, cities, taken)
    company_names = [f"{w} {rng.choice(_KINDS)}" for w in _words(rng, companies, taken)]
    person_names = [f"{rng.choice(_FIRST)} {w}" for w in _words(rng, people, taken)]
    facts: dict[str, dict[str, str]] = {}
    docs: list[dict[str, str]] = []
    doc_ids: dict[str, str] = {}

    def add(name: str, text: str, relations: dict[str, str]) -> None:
        doc_ids[name] = f"d{len(docs)}"
        docs.append({"id": doc_ids[name], "title": name, "text": text})
        facts[name] = relations

    for i, country in enumerate(country_names):
        capital = city_names[i] if i < len(city_names) else None
        tail = f" Its capital is {capital}." if capital else ""
        add(country, f"{country} is a country with about {rng.randint(2, 90)} million people.{tail}", {})
    for i, city in enumerate(city_names):  # every country gets a city first (its capital), then at random
        country = country_names[i] if i < len(country_names) else rng.choice(country_names)
        text = f"{city} is a city in {country}. It has about {rng.randint(20, 900) * 1000:,} inhabitants."
        add(city, text, {"country": country})
    for company in company_names:
        city = rng.choice(city_names)
        kind = company.split()[-1]
        text = (
            f"{company} is a {_INDUSTRY[kind]} company founded in {rng.randint(1890, 2015)}. "
            f"Its headquarters are in {city}."
        )
        add(company, text, {"headquarters": city})
    for person in person_names:
        employer, birthplace = rng.choice(company_names), rng.choice(city_names)
        job = rng.choice(_JOBS)
        article = "an" if job[0] in "aeiou" else "a"
        text = f"{person} is {article} {job}. {person} works at {employer} and was born in {birthplace}."
        add(person, text, {"employer": employer, "birthplace": birthplace})
    names = {"person": person_names, "company": company_names, "city": city_names, "country": country_names}
    return World(names, facts, doc_ids, docs)


def lookup_corpus(seed: int = 0, **options: Any) -> list[dict[str, str]]:
    """The search corpus of the lookup task for `seed` (and its corpus-size knobs): {id, title, text} rows."""
    opts = LookupTask().options(options)
    return build_world(seed, *(opts[k] for k in _SIZES)).docs


def write_lookup_corpus(path: str | Path, seed: int = 0, **options: Any) -> Path:
    """Write `lookup_corpus(seed, **options)` as JSONL to `path` (for `build_toolbox([{"name": "search",
    "corpus": path}])`)."""
    return write_jsonl(path, lookup_corpus(seed, **options))


_SIZES = ("people", "companies", "cities", "countries")


@TASKS.register("lookup")
class LookupTask(Task):
    name = "lookup"
    reward = "exact"
    defaults: ClassVar[dict[str, Any]] = {
        "hops": 2,
        "people": 1500,
        "companies": 60,
        "cities": 30,
        "countries": 8,
    }
    description = "multi-hop questions over a generated corpus of fictional facts, answered with `search`"
    k = 3  # search results per query (the search tool's default)

    def check(self, opts: dict[str, Any]) -> None:
        require(opts["hops"] in _CHAINS, self.name, f"hops must be 1, 2 or 3, got {opts['hops']}")
        require(opts["countries"] >= 1, self.name, "countries must be at least 1")
        for key in ("people", "companies", "cities"):
            require(1 <= opts[key] <= 20000, self.name, f"{key} must be between 1 and 20000")

    def generate(self, n: int, seed: int = 0, split: str = "train", **options: Any) -> list[dict]:
        opts = self.options(options)
        self._world = build_world(seed, *(opts[k] for k in _SIZES))
        with tempfile.TemporaryDirectory(prefix="r1lab-lookup-") as tmp:
            path = write_jsonl(Path(tmp) / "corpus.jsonl", self._world.docs)
            self._box = _search_box(path, self.k)  # reads the file now; the index lives in memory
        return super().generate(n, seed, split, **options)

    def sample(self, rng: random.Random, **opts: Any) -> tuple[str, dict]:
        world = self._world
        chain = rng.choice(_CHAINS[opts["hops"]])
        start = rng.choice(world.names[_RELATIONS[chain[0]][0]])
        path = [start]
        for relation in chain:
            path.append(world.facts[path[-1]][relation])
        question = _QUESTIONS[chain].format(start)
        prompt = (
            f"{question} The facts are in a document collection that you can search with the `search` tool; "
            f"they are not common knowledge. {format_instruction(_RELATIONS[chain[-1]][1])}"
        )
        record = {
            "prompt": prompt,
            "answer": path[-1],
            "hops": len(chain),
            "relations": list(chain),
            "evidence": [world.doc_ids[name] for name in path[:-1]],
            "_path": path,
        }
        return f"{'>'.join(chain)}:{start}", record

    def solve(self, record: dict) -> str:
        from r1lab.tools import ToolCall

        chain, path = record["relations"], record["_path"]
        messages: list[dict[str, Any]] = [{"role": "user", "content": record["prompt"]}]
        said = ""
        for hop, relation in enumerate(chain):
            entity = path[hop]
            intro = f"I need to find {_WANT[relation].format(entity)}."
            call = ToolCall("search", {"query": entity}, "")  # the entity's name finds its document
            result = self._box.run(call)
            doc_id = self._world.doc_ids[entity]
            if result.error or f"(id {doc_id})" not in result.content:
                raise RuntimeError(f"lookup: search for {entity!r} did not return {doc_id}: {result.content}")
            messages.append(
                {"role": "assistant", "content": f"{said}{intro}\n{tool_call_text('search', call.arguments)}"}
            )
            messages.append({"role": "tool", "name": "search", "content": result.content})
            fact = _FACT[relation].format(entity, path[hop + 1])
            sentence = f"{fact}." if relation == "headquarters" else f"{entity} {fact}."
            said = f"The document on {entity} says: {sentence}\n"
        final = f"{said}{ANSWER_PREFIX} {record['answer']}"
        messages.append({"role": "assistant", "content": final})
        record["messages"] = messages
        record["tools"] = self._box.schemas()  # SFT on these rows renders them as the rollout does
        return flatten(messages)


def _search_box(path: Path, k: int) -> Any:
    from r1lab.tools import build_toolbox

    return build_toolbox([{"name": "search", "corpus": str(path), "k": k}], where="task lookup")
