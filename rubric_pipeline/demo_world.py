"""The demo world: a generated fictional corpus whose true nuggets are known, so every stage scores exactly.

Entities (cities, companies, bird species, rivers, inventors) get 4-8 attribute groups, each one gold nugget
of one or two facts, rendered into one or two short documents with paraphrase templates; look-alike entities
(near-identical names, some shared facts) and background entities are distractors. A question asks about one
entity. ``make_responses`` writes answers covering chosen nuggets fully, partially (one of two facts),
wrongly or not at all, with the true label per nugget. Deterministic for a seed and
:func:`generator_version`; lexicon and templates live in ``demo_world.yaml``.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import logging
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rubric_pipeline.core.errors import ConfigError
from rubric_pipeline.core.records import Label, LabelledExample, Rubric, Source, write_jsonl

logger = logging.getLogger(__name__)

TEMPLATES_PATH = Path(__file__).with_name("demo_world.yaml")
LABEL_SOURCE = "gold:demo"
RESPONSE_KINDS = ("complete", "partial", "mixed", "wrong", "lookalike")


@functools.cache
def generator_version() -> str:
    """A hash of this code and its templates: figures on worlds of one version compare, for one seed."""
    digest = hashlib.sha256(Path(__file__).read_bytes() + TEMPLATES_PATH.read_bytes())
    return f"demo-world-{digest.hexdigest()[:12]}"


@functools.cache
def load_templates() -> dict[str, Any]:
    import yaml

    return yaml.safe_load(TEMPLATES_PATH.read_text(encoding="utf-8"))


_ARTICLE = re.compile(r"\b([Aa]) (?=[AEIOUaeiou])")


def _fill(template: str, **values: str) -> str:
    """Fill a template and fix the article before a vowel ("a ochre circle" -> "an ochre circle")."""
    return _ARTICLE.sub(r"\1n ", template.format(**values))


@dataclass
class Nugget:
    """One attribute group of an entity: its facts, the canonical nugget and the document holding it."""

    group: str
    facts: dict[str, str]
    text: str
    doc_id: str = ""


@dataclass
class Entity:
    kind: str
    name: str
    nuggets: list[Nugget]
    lookalike_of: str | None = None
    asked: bool = False


@dataclass
class DemoWorld:
    seed: int
    entities: list[Entity]
    documents: list[dict[str, str]]
    questions: list[dict[str, str]]
    gold_nuggets: dict[str, list[str]]
    gold_passages: dict[str, list[str]]
    question_entities: dict[str, Entity] = field(default_factory=dict)

    def write(self, out_dir: str | Path, responses: list[LabelledExample] | None = None) -> Path:
        """Write corpus.jsonl, questions.jsonl, gold.jsonl and responses.jsonl (default: seed's responses)."""
        out_dir = Path(out_dir)
        write_jsonl(out_dir / "corpus.jsonl", self.documents)
        write_jsonl(out_dir / "questions.jsonl", self.questions)
        gold = [
            {
                "qid": q["qid"],
                "nuggets": self.gold_nuggets[q["qid"]],
                "passages": self.gold_passages[q["qid"]],
            }
            for q in self.questions
        ]
        write_jsonl(out_dir / "gold.jsonl", gold)
        examples = make_responses(self, self.seed) if responses is None else responses
        write_jsonl(out_dir / "responses.jsonl", (example.to_dict() for example in examples))
        return out_dir


# ---------------------------------------------------------------- values and names


class _Namer:
    """Fictional names. Entity names are unique and never reused as a fact value; fact values may repeat
    across entities. Look-alikes keep the stem and change the ending (or keep the surname)."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.entities: set[str] = set()
        self.values: set[str] = set()
        lexicon = load_templates()
        self.syllables, self.people = lexicon["syllables"], lexicon["people"]

    def _place(self, stem: str | None = None) -> str:
        s, pick = self.syllables, self.rng.choice
        return (stem or pick(s["prefix"]) + pick(s["middle"])) + pick(s["suffix"])

    def _person(self, last: str | None = None, initial: bool = False) -> str:
        p, pick = self.people, self.rng.choice
        middle = f" {pick('ABCDEFGHJKLMNPRSTW')}." if initial else ""
        return f"{pick(p['first'])}{middle} {last or pick(p['last'])}"

    def _company(self, stem: str | None = None, word: str | None = None) -> str:
        return f"{self._place(stem)} {word or self.rng.choice(self.syllables['company_word'])}"

    def _draw(self, style: str, **kwargs: Any) -> str:
        if style == "person":
            return self._person(**kwargs)
        return self._company(**kwargs) if style == "company" else self._place(**kwargs)

    def entity(self, style: str, **kwargs: Any) -> str:
        for attempt in range(2000):
            if style == "person" and attempt >= 50:  # first-and-last names run out in big worlds
                kwargs["initial"] = True
            name = self._draw(style, **kwargs)
            if name not in self.entities and name not in self.values:
                self.entities.add(name)
                return name
        raise RuntimeError("the demo world ran out of unique names; ask for fewer documents")

    def value(self, style: str) -> str:
        while True:
            name = self._draw(style)
            if name not in self.entities:
                self.values.add(name)
                return name

    def lookalike(self, style: str, name: str) -> str:
        if style == "person":
            return self.entity(style, last=name.split(" ")[-1])
        base, _, word = name.partition(" ")
        stem = next(
            base[: -len(x)] for x in self.syllables["suffix"] if base.endswith(x) and len(base) > len(x)
        )
        return (
            self.entity(style, stem=stem, word=word) if style == "company" else self.entity(style, stem=stem)
        )


def _value(spec: Any, rng: random.Random, namer: _Namer) -> str:
    if isinstance(spec, str):  # person | place | company
        return namer.value(spec)
    ((kind, arg),) = spec.items()
    if kind == "year":
        return str(rng.randint(*arg))
    if kind == "count":
        low, high = arg
        value = rng.randint(low, high)
        step = 10 ** max(0, len(str(value)) - 3)  # three significant digits
        return f"{max(low, value // step * step):,}"
    if kind == "pick":
        return rng.choice(load_templates()["lexicon"][arg])
    raise ValueError(f"demo_world.yaml: unknown value type {kind!r}")


def _fresh_values(
    specs: dict[str, Any], rng: random.Random, namer: _Namer, taken: set[str]
) -> dict[str, str]:
    """Draw a value per fact, distinct from every value already used by the entity."""
    values: dict[str, str] = {}
    for fact, spec in specs.items():
        for _ in range(50):
            value = _value(spec, rng, namer)
            if value not in taken:
                break
        taken.add(value)
        values[fact] = value
    return values


def _make_entity(
    kind: str, name: str, rng: random.Random, namer: _Namer, copy_from: Entity | None = None
) -> Entity:
    spec = load_templates()["kinds"][kind]
    groups = list(spec["groups"])
    chosen = sorted(rng.sample(groups, rng.randint(4, min(8, len(groups)))), key=groups.index)
    pairs = [group for group in groups if len(spec["groups"][group]["facts"]) == 2]
    if not set(chosen) & set(pairs):  # every entity has a two-fact nugget, so partial support exists
        chosen = sorted([*chosen[1:], rng.choice(pairs)], key=groups.index)
    shared = {}
    if copy_from is not None:  # a look-alike repeats one fact group of its original
        donor = rng.choice(copy_from.nuggets)
        shared = {donor.group: donor.facts}
        if donor.group not in chosen:
            chosen = sorted([*chosen[1:], donor.group], key=groups.index)
    taken = {name}
    nuggets = []
    for group in chosen:
        group_spec = spec["groups"][group]
        facts = dict(shared.get(group) or _fresh_values(group_spec["facts"], rng, namer, taken))
        taken.update(facts.values())
        nuggets.append(Nugget(group, facts, _fill(group_spec["nugget"], name=name, **facts)))
    return Entity(kind, name, nuggets, lookalike_of=copy_from.name if copy_from else None)


# ---------------------------------------------------------------- rendering


def _render_documents(
    entity: Entity, first_index: int, n_docs: int, rng: random.Random
) -> list[dict[str, str]]:
    """One or two short documents (under ~120 words) stating the entity's facts in paraphrase."""
    lexicon = load_templates()
    spec = lexicon["kinds"][entity.kind]
    order = list(entity.nuggets)
    rng.shuffle(order)
    split = [order] if n_docs == 1 else [order[: len(order) // 2], order[len(order) // 2 :]]
    documents = []
    for part, nuggets in enumerate(split):
        doc_id = f"d{first_index + part:05d}"
        sentences = [_fill(rng.choice(lexicon["intro"]), name=entity.name, noun=spec["noun"])]
        for nugget in nuggets:
            nugget.doc_id = doc_id
            group = spec["groups"][nugget.group]
            sentences.append(_fill(rng.choice(group["full"]), name=entity.name, **nugget.facts))
        sentences.insert(rng.randint(1, len(sentences)), rng.choice(lexicon["filler"]))
        title = entity.name if part == 0 else f"{entity.name} ({spec['noun']}, more facts)"
        documents.append({"id": doc_id, "title": title, "text": " ".join(sentences)})
    return documents


def generate_world(
    seed: int = 0, n_questions: int = 40, n_documents: int = 400, lookalikes: int = 2
) -> DemoWorld:
    """Generate ``n_questions`` asked entities, their look-alikes, and background up to ``n_documents``."""
    rng = random.Random(seed)
    namer = _Namer(rng)
    kinds = load_templates()["kinds"]  # kind -> its spec, in the file's order
    entities: list[Entity] = []
    for index in range(n_questions):
        kind = list(kinds)[index % len(kinds)]
        original = _make_entity(kind, namer.entity(kinds[kind]["name"]), rng, namer)
        original.asked = True
        entities.append(original)
        for _ in range(lookalikes):
            style = kinds[kind]["name"]
            entities.append(_make_entity(kind, namer.lookalike(style, original.name), rng, namer, original))
    documents: list[dict[str, str]] = []
    position = 0
    while len(documents) < n_documents:
        if position >= len(entities):  # background entities fill the rest of the corpus
            kind = rng.choice(list(kinds))
            entities.append(_make_entity(kind, namer.entity(kinds[kind]["name"]), rng, namer))
        entity = entities[position]
        n_docs = min(2 if len(entity.nuggets) >= 6 else 1, n_documents - len(documents))
        documents.extend(_render_documents(entity, len(documents), n_docs, rng))
        position += 1
    entities = entities[:position]
    if sum(entity.asked for entity in entities) < n_questions:
        raise ConfigError(
            f"{n_documents} documents cannot hold {n_questions} questions and their look-alikes"
        )

    questions, gold_nuggets, gold_passages, by_qid = [], {}, {}, {}
    for index, entity in enumerate(entity for entity in entities if entity.asked):
        qid = f"q{index + 1:03d}"
        template = rng.choice(kinds[entity.kind]["questions"])
        questions.append({"qid": qid, "question": template.format(name=entity.name)})
        gold_nuggets[qid] = [nugget.text for nugget in entity.nuggets]
        gold_passages[qid] = sorted({f"{nugget.doc_id}#0" for nugget in entity.nuggets})
        by_qid[qid] = entity
    logger.info(
        "demo world: %d entities, %d documents, %d questions", *map(len, (entities, documents, questions))
    )
    return DemoWorld(seed, entities, documents, questions, gold_nuggets, gold_passages, by_qid)


# ---------------------------------------------------------------- responses with true labels


def _state(entity: Entity, nugget: Nugget, rng: random.Random, facts: dict[str, str] | None = None) -> str:
    group = load_templates()["kinds"][entity.kind]["groups"][nugget.group]
    return _fill(rng.choice(group["full"]), name=entity.name, **(facts or nugget.facts))


def _state_one(entity: Entity, nugget: Nugget, rng: random.Random) -> str:
    group = load_templates()["kinds"][entity.kind]["groups"][nugget.group]
    fact = rng.choice(sorted(nugget.facts))
    return _fill(rng.choice(group["single"][fact]), name=entity.name, **{fact: nugget.facts[fact]})


def _wrong_facts(entity: Entity, nugget: Nugget, rng: random.Random, namer: _Namer) -> dict[str, str]:
    specs = load_templates()["kinds"][entity.kind]["groups"][nugget.group]["facts"]
    taken = {entity.name} | {value for other in entity.nuggets for value in other.facts.values()}
    return _fresh_values(specs, rng, namer, taken)


def _plan(kind: str, entity: Entity, rng: random.Random) -> list[str]:
    """Per nugget: full | partial (one of two facts) | wrong | absent; a look-alike response: all absent."""
    n = len(entity.nuggets)
    pairs = [len(nugget.facts) == 2 for nugget in entity.nuggets]
    if kind == "complete":
        return ["full"] * n
    if kind == "lookalike":
        return ["absent"] * n
    if kind == "wrong":
        wrong = set(rng.sample(range(n), max(1, n // 2)))
        return ["wrong" if i in wrong else rng.choice(["full", "absent"]) for i in range(n)]
    if kind == "partial":  # every two-fact nugget half-stated, the others stated or left out
        plan = ["partial" if pair else rng.choice(["full", "absent"]) for pair in pairs]
    else:  # mixed
        plan = [rng.choice(["full", "partial", "wrong", "absent"]) for _ in range(n)]
        plan = [p if p != "partial" or pair else "full" for p, pair in zip(plan, pairs, strict=True)]
    if "absent" not in plan:
        plan[rng.choice([i for i, p in enumerate(plan) if p != "partial"] or [0])] = "absent"
    return plan


PLAN_LABEL = {"full": Label.SUPPORT, "partial": Label.PARTIAL_SUPPORT, "wrong": Label.NOT_SUPPORT,
              "absent": Label.NOT_SUPPORT}  # fmt: skip


def make_responses(
    world: DemoWorld, seed: int = 0, kinds: tuple[str, ...] = RESPONSE_KINDS
) -> list[LabelledExample]:
    """Responses per question covering chosen gold nuggets, each labelled per nugget (``gold:demo``)."""
    rng = random.Random(f"responses-{seed}")
    namer = _Namer(rng)
    namer.entities.update(entity.name for entity in world.entities)
    lexicon = load_templates()
    examples = []
    for question in world.questions:
        qid = question["qid"]
        entity = world.question_entities[qid]
        noun = lexicon["kinds"][entity.kind]["noun"]
        rubrics = [
            Rubric(
                rubric_id=f"{qid}-n{i}",
                text=nugget.text,
                importance="vital" if i < (len(entity.nuggets) + 1) // 2 else "okay",
                sources=[Source(f"{nugget.doc_id}#0", nugget.doc_id, question["question"])],
            )
            for i, nugget in enumerate(entity.nuggets)
        ]
        lookalike = next((e for e in world.entities if e.lookalike_of == entity.name), None)
        for kind in kinds:
            plan = _plan(kind, entity, rng)
            subject = lookalike if kind == "lookalike" and lookalike is not None else entity
            sentences = [_fill(rng.choice(lexicon["response_open"]), name=subject.name, noun=noun)]
            if subject is not entity:
                sentences += [_state(subject, nugget, rng) for nugget in subject.nuggets]
            for action, nugget in zip(plan, entity.nuggets, strict=True):
                if action == "full":
                    sentences.append(_state(entity, nugget, rng))
                elif action == "partial":
                    sentences.append(_state_one(entity, nugget, rng))
                elif action == "wrong":
                    sentences.append(_state(entity, nugget, rng, _wrong_facts(entity, nugget, rng, namer)))
            body = sentences[1:]
            rng.shuffle(body)
            examples.append(
                LabelledExample(
                    qid=qid,
                    question=question["question"],
                    response=" ".join([sentences[0], *body]),
                    response_id=f"{qid}-{kind}",
                    rubrics=rubrics,
                    labels=[PLAN_LABEL[action].value for action in plan],
                    label_source=LABEL_SOURCE,
                )
            )
    return examples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the demo world (corpus, questions, gold, responses).")
    parser.add_argument("out_dir", type=Path)
    for flag, default in (("--seed", 0), ("--questions", 40), ("--documents", 400)):
        parser.add_argument(flag, type=int, default=default)
    args = parser.parse_args(argv)
    world = generate_world(args.seed, n_questions=args.questions, n_documents=args.documents)
    print(world.write(args.out_dir), generator_version())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
