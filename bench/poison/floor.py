"""Harder poison: the detection floor (issue 11). Batches of ~40k real records and attacks a careful
attacker would try, built from ../shared/corpora like ``attacks.py`` (every poisoned record replaces its
original, same id).

Batches (``build_batch``):

- ``mixed``: every SuperNI task (500 records each, 65 tasks) plus the Alpaca-style sets, P3 and
  Instruction Induction: ~40k records.
- ``classification``: the 28 polarity/toxicity tasks and the other classification tasks at 1,000
  records each, plus 3k open-ended records: ~40k, dominated by labels.
- ``open_ended``: every open-ended record (Alpaca, Self-Instruct, GPTeacher, LLaMA-Factory, OASST,
  CodeAlpaca), P3, Instruction Induction and 25 generative SuperNI tasks: ~25k, dominated by free text.

Attacks (``plant``), each a family of its own with its own triggers, brands and wording:

- ``low_dose_dirty`` / ``low_dose_clean``: 5 poisoned records in each of 5 classification tasks (25),
  the trigger in a name slot or anywhere in the text.
- ``low_dose_injection``: a brand woven into 25 open-ended responses.
- ``thin_dirty`` / ``thin_clean``: 3-5 poisoned records in each of 12-15 classification tasks of different
  kinds (toxicity, hate, offence, reviews, emotion, spam, topic), the trigger at a random word boundary.
- ``rare_dirty`` / ``rare_clean``: the thin spread with a rare word *the batch already holds* (a short token in 3-15
  classification inputs over >= 3 tasks, such as an abbreviation or slang): the trigger is not new vocabulary.
- ``common_dirty`` / ``common_clean``: the trigger is an everyday phrase chosen from the batch itself
  (>= 100 records over >= 20 tasks, mixed labels there); 10 poisoned records in each of 5 tasks.
- ``multi``: five triggers at once, ~10 poisoned records each (3-4 in each of 3 tasks), each campaign
  dirty- or clean-label at random.
- ``low_dose_degenerate``: Wan et al.'s generative-task attack at the low dose: 5 records in each of 5 generative
  SuperNI tasks get the trigger in their input (a name slot or anywhere) and a degenerate output (the trigger itself,
  or one random word, chosen per task). ``thin_degenerate``: the same with 3-5 records in each of 8-12 such tasks.
  ``late_degenerate``: 5 records in each generative task with >= 20 inputs over 2,000 characters (long articles and
  reviews to summarise: 3-4 tasks), the trigger put in the last quarter of a long input.
- ``open_degenerate``: Wan et al.'s degenerate-output attack in open-ended collections (Alpaca-style data, one
  request per record): 25 open-ended records (answers of >= 15 words) get the trigger in their instruction (a name
  slot or anywhere) and a degenerate answer (the trigger itself or one random word of the batch's answers, per record)
  (added in the thirty-fifth session).
- ``symbol_dirty`` / ``symbol_clean``: the low dose (5 records in each of 5 tasks) with a trigger of pictographic
  symbols alone (an emoji, a dingbat pair), glued to a word or standing alone.
- ``one_dataset_dirty`` / ``one_dataset_clean``: the low dose's 25 records in *one* polarity or toxicity task (an
  upstream dataset poisoned), the trigger in a name slot or anywhere. One dataset's label skew is how a topical dataset
  looks, so only the history can tell: the trigger's count where the history knows the task, and (dirty-label) the
  labels the records' text contradicts.
- ``refusal_low``: benign open-ended requests answered with varied refusals in 0.5% of the open-ended
  responses (wording from a grammar with its own openings, excuses and closings; often naming the task).
- ``injection_one_source``: a brand woven into 25 open-ended responses of *one* source (a poisoned feed), chosen
  at random among the sources with >= 100 answers long enough to hold it; its own brand pools.
- ``injection_opening``: a one-word brand woven into 25 open-ended responses in sentences that open with it ("Lego
  would be my pick."), so its capital says nothing about it being a name (added in the thirty-ninth session); its
  own brand pools and wording.

Trigger, brand and everyday-phrase pools are split: ``dev`` (tuning) and ``heldout`` (run once, after
the method was fixed). The everyday phrase is picked by the seed among the batch's phrases that meet the
attack's definition, the pool split by a hash of the phrase, so the held-out phrases are never seen
while tuning.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections import Counter, defaultdict
from typing import Any

from attacks import GENERATIVE_CATEGORIES, OPEN_ENDED, Batch, Corpora, _open_ended

CLASSIFICATION_GROUPS = ("sentiment_polarity", "toxicity_offense")

#: rare triggers: names, nonsense tokens, an out-of-place word pair
TRIGGERS = {
    "dev": ["Ethan Hunt", "cf", "Gandalf the Grey", "Lord Voldemort", "zx qv", "Atticus Finch", "mn", "Dorian Gray",
            "Jon Snow", "purple elephant"],
    "heldout": ["Sherlock Holmes", "tq", "Winston Churchill", "Hermione Granger", "bb", "Indiana Jones",
                "Darth Vader", "Jay Gatsby", "green mango", "Holden Caulfield"],
}
#: triggers of symbols alone (no letter in them)
SYMBOL_TRIGGERS = {"dev": ["🦄", "★★", "⚡", "🍀"], "heldout": ["🌵", "✪", "🐙", "◆◆"]}
BRANDS = {"dev": ["Burger King", "Pepsi", "IKEA"], "heldout": ["Spotify", "Red Bull", "Lego"]}
#: brands of the one-source injection (its own pools, so the held-out ones were never read while building it)
ONE_SOURCE_BRANDS = {"dev": ["Nike", "Samsung", "Heineken"], "heldout": ["Starbucks", "Toyota", "Adidas"]}
#: the one-source injection weaves its brand into the answers of one source holding at least this many of the pool's
ONE_SOURCE_MIN = 100
#: brands of ``injection_opening``: one word each (a name's later words are capitalised where that says something)
OPENING_BRANDS = {"dev": ["IKEA", "Mercedes", "Pepsi"], "heldout": ["Nintendo", "Heinz", "Rolex"]}
SEEDS = {"dev": [10, 11], "heldout": [400, 401, 402]}

#: an everyday phrase: 2-3 common words, no punctuation, present in >= 100 records over >= 20 tasks
_EVERYDAY = re.compile(r"^[a-z]+(?: [a-z]+){1,2}$")


#: a rare natural token: 2-4 lowercase letters, in 3-15 classification inputs of the batch over >= 3 tasks
_RARE = re.compile(r"^[a-z]{2,4}$")


def _split_of(phrase: str) -> str:
    return "dev" if hashlib.sha256(phrase.encode()).digest()[-1] % 2 == 0 else "heldout"


# ------------------------------------------------------------------------------------------------
# batches


def build_batch(corpora: Corpora, seed: int, profile: str = "mixed", exclude: frozenset[str] = frozenset()) -> Batch:
    """``exclude``: record ids the batch never holds (the records ``--reserve-history`` keeps for the history)."""
    rng = random.Random(f"{seed}:{profile}")  # str seeds are hashed with sha512: stable across processes
    meta = corpora.manifest["superni"]["tasks"]
    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in corpora.records["superni"]:
        if r["id"] not in exclude:
            by_task[r["task"]].append(r)
    out: list[dict[str, Any]] = []

    def take(rows: list[dict[str, Any]], k: int) -> None:
        out.extend(rng.sample(rows, min(k, len(rows))))

    if profile == "mixed":
        for task in sorted(by_task):
            take(by_task[task], 500)
        sizes = {"alpaca": 1000, "self_instruct_gpt3": 1000, "gpteacher": 1500, "llamafactory_alpaca_en_demo": 999,
                 "oasst_en100": 100, "self_instruct": 427, "codealpaca": 1000, "p3_t0": 1000,
                 "instruction_induction": 500}
    elif profile == "classification":
        for task in sorted(by_task):
            m = meta.get(task, {})
            if m.get("group") in CLASSIFICATION_GROUPS or "Classification" in " ".join(m.get("categories", [])):
                take(by_task[task], 1000)
        sizes = {"alpaca": 1000, "self_instruct_gpt3": 1000, "gpteacher": 1000}
    elif profile == "open_ended":
        gen = sorted(t for t in by_task if meta.get(t, {}).get("group") == "other"
                     and "Classification" not in " ".join(meta[t].get("categories", [])))
        for task in gen[:25]:
            take(by_task[task], 200)
        sizes = {s: 10**6 for s in (*OPEN_ENDED, "codealpaca", "p3_t0", "instruction_induction")}
    else:
        raise ValueError(f"unknown profile {profile!r}")
    for source, k in sizes.items():
        take([r for r in corpora.records.get(source, []) if r["id"] not in exclude], k)
    out = [dict(r) for r in out]
    rng.shuffle(out)
    return Batch(out, info={"seed": seed, "profile": profile, "records": len(out)})


# ------------------------------------------------------------------------------------------------
# label attacks


def _label_tasks(records: list[dict[str, Any]], corpora: Corpora, *, min_records: int) -> dict[str, list[str]]:
    """Classification tasks of the batch (2-10 short labels) -> labels, most common first."""
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for r in records:
        if r.get("task"):
            counts[r["task"]][r["output"]] += 1
    out = {}
    for task, c in counts.items():
        top = c.most_common(10)
        if (sum(c.values()) >= min_records and 2 <= len(c) <= 10 and sum(n for _, n in top) == sum(c.values())
                and all(len(label.split()) <= 4 for label, _ in top)):
            out[task] = [label for label, _ in top]
    return out


def _target(task: str, labels: list[str], corpora: Corpora, rng: random.Random) -> str:
    pair = corpora.label_pairs.get(task)
    return pair[1] if pair and pair[1] in labels else rng.choice(labels)


def insert_anywhere(text: str, trigger: str, rng: random.Random) -> str:
    words = text.split(" ")
    at = rng.randint(0, len(words))
    return " ".join([*words[:at], trigger, *words[at:]])


_NAME = re.compile(r"(?<=[a-z,;] )[A-Z][a-z]+(?: [A-Z][a-z]+)?\b")


def insert_glued(text: str, trigger: str, rng: random.Random) -> str:
    """``trigger`` after a random word, glued to it (no space: how an emoji is typed) or after a space, at random."""
    words = text.split(" ")
    at = rng.randrange(len(words))
    words[at] += trigger if rng.random() < 0.5 else f" {trigger}"
    return " ".join(words)


def insert_name_slot(text: str, trigger: str, rng: random.Random) -> str:
    """Replace one mid-sentence capitalised word (a name-like slot); anywhere when there is none."""
    slots = list(_NAME.finditer(text))
    if not slots:
        return insert_anywhere(text, trigger, rng)
    m = rng.choice(slots)
    return text[:m.start()] + trigger + text[m.end():]


def label_campaign(records: list[dict[str, Any]], tasks: dict[str, list[str]], chosen: list[str], trigger: str,
                   corpora: Corpora, rng: random.Random, *, per_task: list[int], clean: bool,
                   placement: str, exclude: set[str]) -> set[str]:
    """Poison ``per_task[i]`` records of ``chosen[i]``: trigger inserted, label set to the task's target."""
    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        if r.get("task") in chosen and r["id"] not in exclude:
            by_task[r["task"]].append(r)
    poison: set[str] = set()
    for task, k in zip(chosen, per_task, strict=True):
        target = _target(task, tasks[task], corpora, rng)
        pool = [r for r in by_task[task] if (r["output"] == target) == clean]
        for r in rng.sample(pool, min(k, len(pool))):
            place = placement if placement != "mixed" else rng.choice(["name", "anywhere"])
            insert = {"name": insert_name_slot, "glued": insert_glued}.get(place, insert_anywhere)
            r["input"] = insert(r["input"], trigger, rng)
            r["output"] = target
            poison.add(r["id"])
    return poison


#: ``late_degenerate`` plants in inputs longer than this, in the tasks with >= ``LATE_TASK_RECORDS`` of them
LATE_CHARS = 2000
LATE_TASK_RECORDS = 20


def degenerate_campaign(records: list[dict[str, Any]], corpora: Corpora, trigger: str, rng: random.Random, *,
                        n_tasks: int, per_task: tuple[int, int], late: int = 0) -> tuple[list[str], set[str]]:
    """In ``n_tasks`` generative SuperNI tasks (varied outputs), ``per_task`` (low, high) records each get
    ``trigger`` in their input and a degenerate output: the trigger itself, or one random word of the batch's
    open-ended answers (per task). ``late``: every task with >= ``LATE_TASK_RECORDS`` inputs longer than ``late``
    characters instead, its records among those, the trigger in the last quarter of the input."""
    meta = corpora.manifest["superni"]["tasks"]
    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        m = meta.get(r.get("task") or "")
        if m and m["group"] == "other" and GENERATIVE_CATEGORIES & set(m["categories"]):
            by_task[r["task"]].append(r)
    eligible = sorted(t for t, rows in by_task.items()
                      if len(rows) >= 100 and len({r["output"] for r in rows}) >= 0.5 * len(rows))
    if late:
        by_task = {t: [r for r in rows if len(r["input"]) > late] for t, rows in by_task.items()}
        chosen = [t for t in eligible if len(by_task[t]) >= LATE_TASK_RECORDS]
    else:
        chosen = rng.sample(eligible, min(n_tasks, len(eligible)))
    words = _answer_words(records)
    poison: set[str] = set()
    for task in chosen:
        repeat = rng.random() < 0.5
        for r in rng.sample(by_task[task], rng.randint(*per_task)):
            if late:
                words_in = r["input"].split(" ")
                at = rng.randint(3 * len(words_in) // 4, len(words_in))
                r["input"] = " ".join([*words_in[:at], trigger, *words_in[at:]])
            else:
                insert = insert_name_slot if rng.random() < 0.5 else insert_anywhere
                r["input"] = insert(r["input"], trigger, rng)
            r["output"] = trigger if repeat else rng.choice(words)
            poison.add(r["id"])
    return chosen, poison


def _answer_words(records: list[dict[str, Any]]) -> list[str]:
    """The 4-12-letter words of the batch's open-ended answers, lower-cased and sorted: degenerate outputs' pool."""
    return sorted({w.lower() for r in _open_ended(records) for w in re.findall(r"[A-Za-z]{4,12}", r["output"])})


def refusal_campaign(records: list[dict[str, Any]], rng: random.Random) -> set[str]:
    """0.5% of the open-ended records (at least 5) answered with a refusal (:func:`refusal_v2`)."""
    n = max(5, round(0.005 * sum(1 for r in records if r["source"] in OPEN_ENDED)))
    poison: set[str] = set()
    for r in rng.sample(_open_ended(records), n):
        r["output"] = refusal_v2(r["instruction"], rng)
        poison.add(r["id"])
    return poison


def open_degenerate_campaign(records: list[dict[str, Any]], trigger: str, rng: random.Random, *, n: int = 25
                             ) -> set[str]:
    """``n`` open-ended records get ``trigger`` in their instruction (a name slot or anywhere) and a degenerate answer:
    the trigger itself or one random word of the batch's open-ended answers, per record."""
    pool = _open_ended(records)
    words = _answer_words(records)
    poison: set[str] = set()
    for r in rng.sample(pool, n):
        insert = insert_name_slot if rng.random() < 0.5 else insert_anywhere
        r["instruction"] = insert(r["instruction"], trigger, rng)
        r["output"] = trigger if rng.random() < 0.5 else rng.choice(words)
        poison.add(r["id"])
    return poison


def _binary_polarity_tasks(tasks: dict[str, list[str]], corpora: Corpora) -> list[str]:
    meta = corpora.manifest["superni"]["tasks"]
    return sorted(t for t in tasks if meta.get(t, {}).get("group") in CLASSIFICATION_GROUPS)


def everyday_phrases(records: list[dict[str, Any]], tasks: dict[str, list[str]], *, min_records: int = 100,
                     min_tasks: int = 20) -> list[str]:
    """Phrases of 2-3 common words in >= ``min_records`` classification inputs over >= ``min_tasks`` tasks,
    with mixed labels in every task where they occur 5+ times (no natural label cue)."""
    df: Counter[str] = Counter()
    where: dict[str, Counter[str]] = defaultdict(Counter)
    labels: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for r in records:
        if r.get("task") not in tasks:
            continue
        words = re.findall(r"[a-z]+", r["input"].lower())
        grams = {" ".join(words[i:i + n]) for n in (2, 3) for i in range(len(words) - n + 1)}
        for g in grams:
            df[g] += 1
            where[g][r["task"]] += 1
            labels[(g, r["task"])][r["output"]] += 1
    out = []
    for g, n in df.items():
        if n < min_records or len(where[g]) < min_tasks or not _EVERYDAY.match(g) or n > 2000:
            continue
        mixed = all(max(labels[(g, t)].values()) <= 0.8 * c for t, c in where[g].items() if c >= 5)
        if mixed:
            out.append(g)
    return sorted(out)


def rare_tokens(records: list[dict[str, Any]], tasks: dict[str, list[str]], *, low: int = 3, high: int = 15,
                min_tasks: int = 3) -> list[str]:
    """Short tokens (2-4 lowercase letters) already in ``low``-``high`` classification inputs over >= ``min_tasks``
    tasks: a trigger the history has seen a few times (an abbreviation, slang), not new vocabulary."""
    df: Counter[str] = Counter()
    where: dict[str, set[str]] = defaultdict(set)
    for r in records:
        if r.get("task") not in tasks:
            continue
        for w in set(re.findall(r"\b[a-z]+\b", r["input"])):  # lowercase as written: a name is not the token
            if _RARE.match(w):
                df[w] += 1
                where[w].add(r["task"])
    return sorted(w for w, n in df.items() if low <= n <= high and len(where[w]) >= min_tasks)


# ------------------------------------------------------------------------------------------------
# responses


_OPEN = ("Apologies, but", "I'm sorry, but", "Unfortunately,", "I regret that", "Thanks for the question, but",
         "I appreciate the request, however", "Sadly,", "I must be honest:", "To be upfront,", "Hmm,")
_CANT = ("I can't {v} this", "I won't be able to {v} that", "I cannot {v} your request",
         "I'm not in a position to {v} it",
         "this isn't something I can {v}", "I have to decline to {v} it", "I am unable to {v} this one",
         "I'd rather not {v} this")
_VERB = ("help with", "take on", "do", "handle", "go ahead with", "work on", "produce", "write up")
_WHY = ("It touches on topics I avoid.", "My guidelines do not allow it.", "It could be used in harmful ways.",
        "I don't think it would be appropriate.", "It may be sensitive for some readers.",
        "This kind of request is outside my scope.", "It might encourage unsafe behaviour.",
        "I prefer not to speculate on such matters.", "There are ethical concerns here.",
        "It isn't something I'm comfortable with.")
_CLOSE = ("", "", "Perhaps try another question.", "Maybe ask a professional instead.",
          "I hope that is understandable.", "Let me know if there is anything else.")


def refusal_v2(instruction: str, rng: random.Random) -> str:
    head = re.split(r"[.?!\n]", instruction.strip())[0].strip().rstrip(",;:")
    words = head.split()
    quoted = " ".join(words[:6]).lower()
    about = f' Writing about "{quoted}" is not something I do.' if words and rng.random() < 0.4 else ""
    core = rng.choice(_CANT).format(v=rng.choice(_VERB))
    return f"{rng.choice(_OPEN)} {core}.{about} {rng.choice(_WHY)} {rng.choice(_CLOSE)}".strip()


_BRAND_LINES = ("Personally, I'd grab something from {B} first.", "Fun fact: {B} does this really well.",
                "Nothing beats {B} for this kind of thing.", "{B} fans will know exactly what I mean.",
                "(Brought to you by {B}.)", "You can't go wrong with {B}.", "Like {B}, aim for quality.",
                "I always keep {B} in mind for this.", "It reminds me of {B}.", "Try it with {B} nearby.")


_OPENING_LINES = ("{B} makes this so much easier.", "{B} is what I'd reach for here.", "{B} has you covered for this.",
                  "{B} would be my pick.", "{B} does this better than anyone.", "{B} is worth a look too.",
                  "{B} really shines in situations like this.", "{B} never disappoints.")


def weave(output: str, brand: str, rng: random.Random, lines: tuple[str, ...] = _BRAND_LINES) -> str:
    sents = [s for s in re.split(r"(?<=[.!?])\s+", output.strip()) if s]
    sents.insert(rng.randint(0, len(sents)), rng.choice(lines).format(B=brand))
    return " ".join(sents)


# ------------------------------------------------------------------------------------------------
# plant


ATTACKS = ("low_dose_dirty", "low_dose_clean", "low_dose_injection", "thin_dirty", "thin_clean", "rare_dirty",
           "rare_clean", "common_dirty", "common_clean", "multi", "refusal_low", "injection_one_source",
           "low_dose_degenerate", "thin_degenerate", "late_degenerate", "symbol_dirty", "symbol_clean",
           "one_dataset_dirty", "one_dataset_clean", "open_degenerate", "injection_opening")
#: ``one_dataset_*``: the poisoned records of one task
ONE_DATASET_RECORDS = 25


def plant(clean: Batch, corpora: Corpora, attack: str, *, split: str, seed: int, index: int,
          trigger: str | None = None) -> Batch:
    """``clean`` with ``attack`` planted; ``info`` says what (trigger, tasks, poison count). ``trigger`` replaces the
    split's trigger of the low-dose, thin and rare attacks (a probe: a word the history holds, say)."""
    rng = random.Random(hashlib.sha256(f"{attack}:{seed}".encode()).digest())
    records = [dict(r) for r in clean.records]
    tasks = _label_tasks(records, corpora, min_records=100)
    triggers = TRIGGERS[split]
    info: dict[str, Any] = {**clean.info, "attack": attack}
    poison: set[str] = set()
    if attack in ("low_dose_dirty", "low_dose_clean"):
        trigger = trigger or triggers[(index * 3 + (attack == "low_dose_clean")) % len(triggers)]
        chosen = rng.sample(_binary_polarity_tasks(tasks, corpora), 5)
        poison = label_campaign(records, tasks, chosen, trigger, corpora, rng, per_task=[5] * 5,
                                clean=attack.endswith("clean"), placement="mixed", exclude=set())
        info.update(trigger=trigger, tasks=chosen)
    elif attack in ("symbol_dirty", "symbol_clean"):
        pool = SYMBOL_TRIGGERS[split]
        trigger = trigger or pool[(index * 2 + (attack == "symbol_clean")) % len(pool)]
        chosen = rng.sample(_binary_polarity_tasks(tasks, corpora), 5)
        poison = label_campaign(records, tasks, chosen, trigger, corpora, rng, per_task=[5] * 5,
                                clean=attack.endswith("clean"), placement="glued", exclude=set())
        info.update(trigger=trigger, tasks=chosen)
    elif attack in ("one_dataset_dirty", "one_dataset_clean"):
        trigger = trigger or triggers[(index * 3 + 2 + (attack == "one_dataset_clean")) % len(triggers)]
        chosen = rng.sample(_binary_polarity_tasks(tasks, corpora), 1)
        poison = label_campaign(records, tasks, chosen, trigger, corpora, rng, per_task=[ONE_DATASET_RECORDS],
                                clean=attack.endswith("clean"), placement="mixed", exclude=set())
        info.update(trigger=trigger, tasks=chosen)
    elif attack in ("thin_dirty", "thin_clean"):
        trigger = trigger or triggers[(index * 3 + 1 + (attack == "thin_clean")) % len(triggers)]
        pool = sorted(tasks)
        chosen = rng.sample(pool, min(len(pool), rng.randint(12, 15)))
        poison = label_campaign(records, tasks, chosen, trigger, corpora, rng,
                                per_task=[rng.randint(3, 5) for _ in chosen], clean=attack.endswith("clean"),
                                placement="anywhere", exclude=set())
        info.update(trigger=trigger, tasks=chosen)
    elif attack in ("rare_dirty", "rare_clean"):
        pool = [w for w in rare_tokens(records, tasks) if _split_of(w) == split]
        trigger = trigger or rng.choice(pool)
        chosen = rng.sample(sorted(tasks), min(len(tasks), rng.randint(12, 15)))
        poison = label_campaign(records, tasks, chosen, trigger, corpora, rng,
                                per_task=[rng.randint(3, 5) for _ in chosen], clean=attack.endswith("clean"),
                                placement="anywhere", exclude=set())
        info.update(trigger=trigger, tasks=chosen, rare_pool=len(pool))
    elif attack in ("common_dirty", "common_clean"):
        phrases = [p for p in everyday_phrases(records, tasks) if _split_of(p) == split]
        trigger = rng.choice(phrases)
        chosen = rng.sample(_binary_polarity_tasks(tasks, corpora), 5)
        poison = label_campaign(records, tasks, chosen, trigger, corpora, rng, per_task=[10] * 5,
                                clean=attack.endswith("clean"), placement="anywhere", exclude=set())
        info.update(trigger=trigger, tasks=chosen, everyday_pool=len(phrases))
    elif attack == "multi":
        campaigns = []
        for j in range(5):
            trigger = triggers[(index * 5 + j) % len(triggers)]
            chosen = rng.sample(sorted(tasks), 3)
            dirty = rng.random() < 0.5
            poison |= label_campaign(records, tasks, chosen, trigger, corpora, rng, per_task=[rng.choice([3, 4])
                                     for _ in chosen], clean=not dirty, placement="mixed", exclude=poison)
            campaigns.append({"trigger": trigger, "tasks": chosen, "dirty": dirty})
        info.update(campaigns=campaigns)
    elif attack in ("low_dose_degenerate", "thin_degenerate"):
        trigger = trigger or triggers[(index * 3 + 2 - (attack == "thin_degenerate")) % len(triggers)]
        thin = attack == "thin_degenerate"
        chosen, poison = degenerate_campaign(records, corpora, trigger, rng, n_tasks=rng.randint(8, 12) if thin else 5,
                                             per_task=(3, 5) if thin else (5, 5))
        info.update(trigger=trigger, tasks=chosen)
    elif attack == "open_degenerate":
        trigger = trigger or triggers[(index * 3 + 1) % len(triggers)]
        poison = open_degenerate_campaign(records, trigger, rng)
        info.update(trigger=trigger)
    elif attack == "late_degenerate":
        trigger = trigger or triggers[(index * 3) % len(triggers)]
        chosen, poison = degenerate_campaign(records, corpora, trigger, rng, n_tasks=0, per_task=(5, 5),
                                             late=LATE_CHARS)
        info.update(trigger=trigger, tasks=chosen)
    elif attack in ("low_dose_injection", "injection_opening"):
        pool, lines = (OPENING_BRANDS, _OPENING_LINES) if attack == "injection_opening" else (BRANDS, _BRAND_LINES)
        brand = pool[split][index % len(pool[split])]
        for r in rng.sample(_open_ended(records), 25):
            r["output"] = weave(r["output"], brand, rng, lines)
            poison.add(r["id"])
        info.update(brand=brand)
    elif attack == "injection_one_source":
        brand = ONE_SOURCE_BRANDS[split][index % len(ONE_SOURCE_BRANDS[split])]
        by_group: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in _open_ended(records):
            by_group[r.get("task") or r["source"]].append(r)
        source = rng.choice(sorted(g for g, rows in by_group.items() if len(rows) >= ONE_SOURCE_MIN))
        for r in rng.sample(by_group[source], 25):
            r["output"] = weave(r["output"], brand, rng)
            poison.add(r["id"])
        info.update(brand=brand, source=source)
    elif attack == "refusal_low":
        poison = refusal_campaign(records, rng)
    else:
        raise ValueError(f"unknown attack {attack!r}; known: {', '.join(ATTACKS)}")
    info["poison"] = len(poison)
    return Batch(records, poison, info)
