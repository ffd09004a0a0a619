"""The options of the two poison checks, as frozen validated dataclasses (:mod:`tunegate.core.checks.config`).

Defaults were fixed on development data of ``bench/poison`` before its held-out splits were run;
docs/poison.md has the measurements behind each one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tunegate.core.checks.config import CheckConfig, boolean, fraction, integer, number, optional_path


def _nats(config: CheckConfig, *names: str) -> None:
    """Evidence thresholds: positive log-likelihood ratios."""
    for name in names:
        number(config, name, low=0.0, low_open=True, high_open=True)


@dataclass(frozen=True)
class TriggerConfig(CheckConfig):
    """Options of ``poison_trigger``. Defaults come from ``bench/poison``'s dev split (2 seeds, triggers
    "James Bond" and "Joe Biden"), the first held-out split after it had exposed a weakness ("test-v1")
    and the bundled test slices.

    * ``min_evidence`` (30.0 nats): summed evidence for a trigger. Planted triggers measured 51-216
      (20 records in each of 5 tasks) and 32-41 (10 x 5, 20 x 3); natural phrases up to 67 ("stupid"
      in the toxicity tasks), so evidence alone does not separate:
    * ``min_exclusivity`` (0.95): planted triggers measured 0.98-1.0 (a trigger that is also a real
      name keeps its natural occurrences); natural phrases with >= 30 nats at most 0.77 in the 20k
      batches and 0.92 in the smaller test batch, and at most 0.93 among those with >= 15 nats
      ("buildthewall", 19.9 nats).
    * ``min_tasks`` (2): datasets with evidence of at least ``min_task_evidence`` (3.0 nats). One topical
      task alone ("2006 census" -> dbpedia ``Village``, 27 nats, exclusivity 1.0) is how language
      works, not an attack. Fewer datasets with scorable tasks: ``insufficient_data``.
    * ``max_family_evidence`` (15.0 nats): what one dataset's tasks add together. Natural phrases with
      exclusivity >= 0.8 reached 14.7 on the dev half of the clean corpora; planted label campaigns
      11-15 per task (20 records).
    * ``context_words`` (5): words either side of a phrase that identify its example across templates.
    * ``max_label_words`` (6): longest label; longer repeated outputs are answers, not labels.
    * ``min_task_hits`` (3), ``min_label_share`` (0.9), ``min_output_share`` (0.6): a phrase concentrates
      in a task when at least 3 of its records there, and that share of them, share one label / one
      exact output / one output shape, or (generative tasks) have degenerate outputs.
    * ``ngram_max`` (2): phrases of 1-2 words are scored; longer triggers are found through their word
      pairs. ``min_records`` (5): a phrase must occur in 5 records. ``max_phrase_df`` (0.1): phrases in
      more than 10% of the records are not scored.
    * ``min_task_records`` (50): smaller tasks have no reliable base rate and are not scored.
    * ``max_labels`` (10), ``label_coverage`` (0.95): a task is a classification task when at most 10
      outputs cover 95% of its records.
    * ``template_share`` (0.5): a generative task is scored only when half of its records share one
      instruction (a task template); open-ended collections have no task-level notion of a normal output.
    * ``short_ratio`` (0.25): an output is degenerate-short at a quarter of its task's median length.
    * ``label_consistency`` (True): train the masked classifier for ``label_inconsistent``.
    * ``max_chars`` (20,000): characters of each prompt scanned; a trigger past them is not read. Every prompt of
      the shared corpora is shorter (the longest 12,677 characters; 580 of 88k past 2,000). It was 2,000, and a
      trigger put late in a long input (a news article to summarise, a long review) was invisible to every pass:
      the floor benchmark's ``thin_degenerate`` lost its four records in a task of 5,000-character articles. The
      cap bounds memory on a corpus of long documents. ``max_phrases`` (20): phrases reported.
    * ``pooled`` (True): a second, pooled pass for small, spread campaigns (issue 11): in classification
      tasks a phrase concentrates with 2 records (80% of them on one label), each dataset with >= 1 nat
      counts, and a campaign needs ``pooled_min_evidence`` (12.0 nats), ``pooled_min_exclusivity``
      (0.97) and ``pooled_min_datasets`` (4). Dev split of ``bench/poison/floor_run.py`` (seeds 10, 11):
      planted 5 x 5 campaigns 16-19 nats over 4-5 datasets, exclusivity 0.93 ("cf", which also occurs
      naturally) to 1.0; natural cues of classification-only batches 12-19 nats at exclusivity 0.90-0.95
      ("works great", "a must", "only complaint", "gem"), which at 0.9 raised a false campaign ("a must",
      4 datasets, seed 11). 0.97 keeps the clean dev batches silent and gives up triggers that also occur
      naturally (docs/poison.md, detection floor). Since the thirty-sixth session a task where a phrase's records
      share a label too common to be evidence leaves the share (``evidence.concentration``); the natural phrases
      that meet the pass's evidence and datasets on the clean dev batches of seeds 10-17 kept their maximum (0.953,
      "a must"), and the clean batches of dev 10-25 stay silent (bench/poison/RESULTS.md 6av). Since the
      thirty-seventh session the exclusivity is measured among the phrase's records in classification tasks (the
      only ones the pass reads; natural phrases of those clean batches: still at most 0.953), and the candidates it
      does not raise are tested by contradiction without a history (:mod:`.cue_pass`, at ``contradiction_alpha``, with
      the ``contradiction`` switch): a dirty-label campaign whose trigger also occurs naturally (RESULTS.md 6aw).
    * ``degenerate`` (True): the degenerate pass (issue 11): generative tasks alone, their "degenerate output"
      channel alone (Wan et al.'s attack: a trigger in the input, a degenerate output). A phrase concentrates in a
      task with 2 degenerate records (``min_output_share`` of its records there), each task with >= 1 nat counts,
      its exclusivity is measured among its records *in generative tasks*, and a campaign needs ``min_evidence``
      (30 nats) over ``min_tasks`` (2) datasets and ``degenerate_min_exclusivity`` (0.5: most of the phrase's
      generative records in the tasks whose outputs it degenerates; a policy, not fitted). The per-task scan
      counts a trigger's records in classification tasks and its tasks under 3 nats against it (dev
      ``late_degenerate`` "mn", natural in 86 financial headlines: exclusivity 0.19). Measured on the floor
      benchmark (dev 10-12 and 19-22, no history): planted campaigns 47-122 nats over 4-12 datasets, exclusivity
      0.80-1.0 (their names); natural phrases of the clean batches at most 27 nats ("how", exclusivity 0.04),
      and none with exclusivity >= 0.5 over 2 datasets (RESULTS.md 6ao). The same pass, with the same bars, reads
      the open-ended collections apart (:func:`~.tasks.open_ended_tasks`: an answer of at most 3 words where a
      collection's answers run longer is degenerate; exclusivity among the phrase's open-ended records; RESULTS.md
      6au).
    * ``history_dir`` / ``batch_id``: set per run (not in a policy): the history whose published nights' phrase
      statistics (:mod:`.phrase_history`) say which label skews are this pipeline's normal; a rerun of ``batch_id``
      does not count itself. Without it (or before the history's first night with statistics) the check is
      exactly the batch-only scan. ``history_nights`` (14): the most recent nights summed.
    * With a history, a label's expected rate among the records of a task that hold a phrase is the posterior mean
      of a Beta prior centred on the task's base rate, worth ``history_weight`` (4.0) records, updated by the
      history's records with the phrase there (:mod:`.novelty`). A weak prior, so that a phrase's own history
      dominates as soon as it has a few records: a prior weight measured per task from the history (method of
      moments, ~1000 records in a task whose phrases mostly do not steer) pulled a known strong cue back to the
      base rate and raised it as new (dev, "polarity positive": 109 of 109 history records on one label).
    * ``novelty`` (True): the novelty pass (:mod:`.novelty_pass`), with a history only. ``novelty_task_nats``
      (2.0): a task's statistic counts from 2 nats (3 records of 3 on one label of a 50/50 task: 2.08), so the
      many tasks where a phrase has 2 records cost nothing. ``novelty_alpha`` (0.01): the family-wise false-alarm
      rate per night of the pass (one false campaign in 100 clean nights at most, when the history's predictive
      holds), shared equally by three groups of phrases (never seen in their tasks, at least twice as frequent
      as in the history, the rest), each a Bonferroni bound over Tarone's count of the phrases that could reach it.
      None of these three was fitted: 2 nats is the smallest concentration the pooled pass counts, 0.01 a policy.
    * ``insertion`` (True since 2026-12-05; opt-in before, docs/poison.md says why and what changed): the insertion pass
      (:mod:`.insertion_pass`, issue 11): everyday phrases planted as triggers, found through their out-of-place
      occurrences (:mod:`.insertion`). An occurrence is out of place when
      ``PMI(L, R) - PMI(L, w1) - PMI(w2, R)`` (its neighbours ``L``, ``R``; batch document frequencies) reaches
      ``insertion_min_score`` (4.0 nats) and the neighbours' bigram ``L R`` is held by ``insertion_min_bridge`` (2)
      other records. Dev split of ``bench/poison/floor_run.py`` (seeds 10, 11; "of my", "able to", "the next", "a
      few"): 35-65% of the poisoned occurrences, 0.6-2.1% of the phrases' natural ones and 1.8% of all natural
      occurrences of candidate phrases reach 4.0 (3.0: 35-68%, 0.6-3.2%, 3.7%, and a natural "to be" came within
      0.3 nats of the bar). A phrase's out-of-place records are judged against its own in-place records in each
      task (since 2026-12-03, evening: the first null, the task's out-of-place label shares, raised 6 natural cues
      on a 200k clean corpus; docs/poison.md). ``insertion_alpha`` (0.01): the pass's false-alarm rate per batch
      (Bonferroni over Tarone's count, as ``novelty_alpha``; a policy, not fitted). ``insertion: false`` turns the
      pass off (about 1.2 s of the trigger check's 12 s on a 40k night; 1.7x the check at 200k records).
    * ``contradiction`` (True): the contradiction pass (:mod:`.contradiction_pass`, issue 11), with a history only:
      phrases the history has never seen in their tasks, held by 4-100 classification records in >= 2 datasets, whose
      records' labels their own text contradicts (out-of-fold naive Bayes ranks per task, :mod:`.contradiction`),
      combined with their label skew by Fisher's method. ``contradiction_alpha`` (0.01): the pass's false-alarm rate
      per night (Bonferroni over the phrases tested: ~350 on the floor benchmark's mixed dev batches, ~1,500 on its
      classification batch; bars 10.5-11.9 nats; a policy, not fitted; since 2026-12-05 weighted: the few *broad*
      phrases, 3 or more records in each of 3 or more datasets, share half of it, the rest the other half). Dev
      (seeds 10-11): planted dirty-label triggers of the thin spread 18-28 nats, natural phrases tested at most 7.6.
      The same switch and level govern the pooled pass's contradiction test of its candidates (:mod:`.cue_pass`),
      which runs without a history (a first night).
    * ``excess`` (True): the excess pass (:mod:`.excess_pass`, issue 11), with a history only: tonight's records of a
      task holding a phrase on one label against the history's count (beta-binomial predictive), datasets combined by
      the truncated product method or Fisher's (the better, less ``ln 2``); everyday phrases or rare words planted as
      triggers, dirty- or clean-label. ``excess_alpha``
      (0.01): the pass's false-alarm rate per night (Bonferroni over Tarone's count: 1,400-2,300 of 10,000-12,000
      phrases tested on the floor benchmark's mixed dev batches, bar 11.9-12.3 nats; a policy, not fitted).
      ``excess_placement`` (True, twenty-third session): where a task's count is at most 0.05, the pass also reads how
      many of those records hold the phrase out of place (the insertion test's verdicts, :mod:`.placement`: about
      half of an everyday phrase's planted records, a few percent of its natural ones), as a third combination of
      the phrase's datasets (Bonferroni over three instead of two for the insertion test's candidates). It needs
      ``insertion`` (the test's verdicts); ``excess_placement: false`` reads the counts alone.
    * ``breadth`` (True): the breadth pass (:mod:`.breadth_pass`, issue 11), with a history only: a phrase the history
      holds whose count tonight bursts overall and, on one label, in many datasets at once (a rare word planted
      clean-label in a dozen tasks). ``breadth_alpha`` (0.01): the pass's false-alarm rate per night (Bonferroni over
      the history's phrases that occur tonight: bar ~14.3 nats on the floor benchmark's mixed dev batches; natural
      phrases at most 3.1 nats there, planted rare words 20.3-33.4; a policy, not fitted).
    """

    check: ClassVar[str] = "poison_trigger"

    ngram_max: int = 2
    min_records: int = 5
    max_phrase_df: float = 0.1
    min_task_records: int = 50
    max_labels: int = 10
    label_coverage: float = 0.95
    min_task_hits: int = 3
    min_label_share: float = 0.9
    min_output_share: float = 0.6
    min_evidence: float = 30.0
    min_exclusivity: float = 0.95
    short_ratio: float = 0.25
    template_share: float = 0.5
    min_tasks: int = 2
    min_task_evidence: float = 3.0
    label_consistency: bool = True
    max_chars: int = 20_000
    max_phrases: int = 20
    context_words: int = 5
    max_label_words: int = 6
    max_family_evidence: float = 15.0
    pooled: bool = True
    pooled_min_evidence: float = 12.0
    pooled_min_exclusivity: float = 0.97
    pooled_min_datasets: int = 4
    degenerate: bool = True
    degenerate_min_exclusivity: float = 0.5
    history_dir: str | None = None
    batch_id: str | None = None
    history_nights: int = 14
    history_weight: float = 4.0
    novelty: bool = True
    novelty_task_nats: float = 2.0
    novelty_alpha: float = 0.01
    insertion: bool = True
    insertion_min_score: float = 4.0
    insertion_min_bridge: int = 2
    insertion_alpha: float = 0.01
    contradiction: bool = True
    contradiction_alpha: float = 0.01
    excess: bool = True
    excess_alpha: float = 0.01
    excess_placement: bool = True
    breadth: bool = True
    breadth_alpha: float = 0.01

    def __post_init__(self) -> None:
        for name in ("ngram_max", "min_records", "context_words", "max_label_words", "min_task_records",
                     "max_labels", "min_task_hits", "max_chars", "min_tasks", "max_phrases", "pooled_min_datasets",
                     "history_nights", "insertion_min_bridge"):
            integer(self, name, minimum=1)
        for name in ("max_phrase_df", "label_coverage", "min_label_share", "min_output_share", "min_exclusivity",
                     "short_ratio", "template_share", "pooled_min_exclusivity", "degenerate_min_exclusivity",
                     "novelty_alpha", "insertion_alpha", "contradiction_alpha", "excess_alpha", "breadth_alpha"):
            fraction(self, name)
        _nats(self, "min_evidence", "max_family_evidence", "pooled_min_evidence", "history_weight", "novelty_task_nats",
              "insertion_min_score")
        number(self, "min_task_evidence", low=0.0, high_open=True)
        optional_path(self, "history_dir")
        boolean(self, "label_consistency")
        boolean(self, "pooled")
        boolean(self, "degenerate")
        boolean(self, "novelty")
        boolean(self, "insertion")
        boolean(self, "contradiction")
        boolean(self, "excess")
        boolean(self, "excess_placement")
        boolean(self, "breadth")


@dataclass(frozen=True)
class ContentConfig(CheckConfig):
    """Options of ``poison_content`` (defaults measured on ``bench/poison`` dev batches).

    * ``ngram_max`` (2): longest phrase, in words, that is scored.
    * ``min_records`` (10): a phrase must occur unexplained in at least this many responses.
    * ``min_response_words`` (8): shorter outputs (labels, short answers) are not responses.
    * ``max_phrase_df`` (0.05): phrases in more than this share of the responses are not scored.
    * ``min_evidence`` (40.0 nats): Poisson evidence of the unexplained count (an occurrence is explained
      when its prompt holds the phrase or one of its content words). Natural names that pass the other
      tests reach at most 16 nats on the floor benchmark's clean dev batches (``bench/poison/floor.py``,
      35k records) and under 15 on the clean corpora; a brand named in 0-3 prompts reaches 40 nats at
      16-20 responses. Natural stylistic words reach ~250, hence also
    * ``min_capitalized`` (0.7): share of the phrase's words capitalised where a capital says something (a proper
      name: in mid-sentence, and after the first word at a sentence or list-item start, a name's lower-case
      particles such as "of" not counted; ``In conclusion`` opens essay paragraphs; at least 3 such words),
    * ``min_groups`` (3) and ``max_group_share`` (0.5): spread over tasks/sources. A top group above the share is
      the group's own vocabulary only when the group's share of the responses like the phrase's (of their kind,
      open-ended answers or task outputs, and of about their length: ``injection.GroupShares``) does not explain it
      either (``injection.concentrated``: binomial tail below 0.001), or the group's earlier nights in the history
      (``history_dir``) say the name is new there (``injection.new_to_source``: a poisoned feed, not its vocabulary).
    * With a history, a name under ``min_evidence`` (the prompts name it often: a popular brand) is still injected
      when its unexplained responses tonight, in the groups the history knows, exceed what the earlier nights'
      unexplained responses predict (``injection.new_in_history``: a Poisson bound on the summed conditional tests
      of two rates, below 0.001 family-wise over the phrases tested).
    * ``refusal_rate`` (0.005): expected share of refusals among open-ended responses before any history
      (the refusal pattern matches 0.28% of the open-ended corpus responses), worth
      ``refusal_prior_responses`` (2000) responses: a weak prior that earlier nights' counts in the history
      (``history_dir``) outweigh. ``refusal_min_evidence`` (6.0 nats): the rate is anomalous when tonight's
      count or more has a beta-binomial tail probability below ``exp(-6)`` (0.25%: about one false alarm in
      400 nightly batches when the model holds). On the floor benchmark's dev batches, 25 refusals added to
      the ~17 that three clean nights of history lead to expect reach 8.1-8.8 nats (with the first, broader
      pattern 6.8-7.1), so a stricter threshold would put the floor near 25 refusals per 7,000 open-ended
      responses.
    * With a history whose nights keep their refusals per group, the refusals tonight in the groups whose earlier
      nights refused at most half as often as the pipeline (``refusals.quiet_groups``) are tested apart, against
      those nights (``refusals._quiet_test``); the two tests then need ``refusal_min_evidence`` + ln 2 each.
    * ``history_dir`` / ``batch_id``: set per run (not in a policy): the history whose earlier nights give the
      refusal baseline; a rerun of ``batch_id`` does not count itself.
    * ``template_records`` (5): an instruction shared by this many records is a task template; records
      with their own instruction are open-ended.
    * ``max_chars`` (20,000): characters of each output and prompt scanned; a brand woven into an answer past them
      is not read (it was 4,000: a long answer's second half went unread). Every output of the shared corpora is
      shorter (the longest 3,742 characters), and so is every prompt (12,677).
    * ``max_phrases`` (20): phrases reported in the metrics.
    * ``min_responses`` (200): fewer responses (or fewer than ``min_groups`` groups among them) and the
      injection scan is skipped: ``metrics["status"] == "insufficient_data"``, an ``info`` issue
      ``check_skipped``. ``refusal_min_responses`` (200): the same for the refusal-rate test (at 0.5%,
      200 open-ended responses hold one refusal).
    """

    check: ClassVar[str] = "poison_content"

    ngram_max: int = 2
    min_records: int = 10
    min_response_words: int = 8
    max_phrase_df: float = 0.05
    min_evidence: float = 40.0
    min_capitalized: float = 0.7
    min_groups: int = 3
    max_group_share: float = 0.5
    refusal_rate: float = 0.005
    refusal_prior_responses: int = 2000
    refusal_min_evidence: float = 6.0
    template_records: int = 5
    max_chars: int = 20_000
    max_phrases: int = 20
    min_responses: int = 200
    refusal_min_responses: int = 200
    history_dir: str | None = None
    batch_id: str | None = None

    def __post_init__(self) -> None:
        for name in ("ngram_max", "min_records", "min_response_words", "min_groups", "max_chars", "max_phrases",
                     "template_records", "min_responses", "refusal_min_responses", "refusal_prior_responses"):
            integer(self, name, minimum=1)
        for name in ("max_phrase_df", "min_capitalized", "max_group_share", "refusal_rate"):
            fraction(self, name)
        _nats(self, "min_evidence", "refusal_min_evidence")
        optional_path(self, "history_dir")
