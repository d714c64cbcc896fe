"""HellaSwag, Winogrande and multiple-choice files and scoring, on task files written here."""
from __future__ import annotations

import numpy as np
import pytest

from llmtk.errors import InputError
from llmtk.evals.tasks import (MT19937, ChoiceTask, load_hellaswag, load_multiple_choice, load_winogrande,
                               score_choices, score_winogrande, select_hellaswag, select_winogrande,
                               write_multiple_choice)

GOLD_TEXTS = [
    "The cat sat on the mat and purred.",
    "She poured the tea into a cup.",
    "He tied his shoes before the run.",
]


def tokenize(text: str) -> list[int]:
    return [0] + [b + 1 for b in text.encode()]  # BOS then bytes


@pytest.fixture(scope="module")
def bigram_logits():
    """A byte-bigram 'model' trained on the gold texts: it prefers them over the distractors."""
    counts = np.ones((257, 257))
    for t in GOLD_TEXTS * 20:
        ids = tokenize(t)
        for a, b in zip(ids, ids[1:]):
            counts[a, b] += 1
    table = np.log(counts / counts.sum(axis=1, keepdims=True)).astype(np.float32)
    return lambda ids: table[ids]


def test_mt19937_matches_the_cpp_standard_value():
    rng = MT19937(5489)
    for _ in range(9999):
        rng()
    assert rng() == 4123659995  # the C++ standard's check value for mt19937
    assert MT19937(1).uniform_int(0, 9) in range(10)


def test_hellaswag_file_and_scoring(bigram_logits):
    text = ("The cat sat on\n0\nthe mat and purred.\nzq xv wk jj.\nqq pp zz yy.\nxx vv.\n"
            "She poured the tea\n2\nzzz qqq.\nvvv www.\ninto a cup.\nkk jj.\n")
    tasks = load_hellaswag(text)
    assert [t.gold for t in tasks] == [[0], [2]] and len(tasks[0].choices) == 4
    s = score_choices(tasks, tokenize, bigram_logits, "hellaswag")
    assert (s.n_done, s.n_correct) == (2, 2) and s.running == [1.0, 1.0]
    lo, hi = s.wilson_interval()
    assert 0 < lo < 1.0 <= hi + 1e-12
    assert sorted(t.context for t in select_hellaswag(tasks, None)) == sorted(t.context for t in tasks)
    assert len(select_hellaswag(tasks, 1)) == 1


def test_hellaswag_bad_files_are_clear():
    with pytest.raises(InputError, match="multiple of 6"):
        load_hellaswag("a\n0\nb\nc\n")
    with pytest.raises(InputError, match="gold index"):
        load_hellaswag("ctx\nx\na\nb\nc\nd\n")


def test_winogrande_csv_and_scoring(bigram_logits):
    csv = ("index,sentence,option1,option2,answer\n"
           "0,He tied his _ before the run.,shoes,zzqx,1\n"
           '1,"She poured the tea into a _.",qqzz,cup,2\n'
           "2,no blank here,a,b,1\n")
    tasks = load_winogrande(csv)
    assert len(tasks) == 2
    assert tasks[1].context == "She poured the tea into a " and tasks[1].suffix == "."
    s = score_winogrande(tasks, tokenize, bigram_logits)
    assert (s.n_done, s.n_correct) == (2, 2)
    assert len(select_winogrande(tasks, 1)) == 1
    with pytest.raises(InputError, match="no Winogrande tasks"):
        load_winogrande("nothing,here\n")


def test_multiple_choice_binary_round_trip(bigram_logits):
    tasks = [ChoiceTask("The cat sat on", ["qz xv.", "the mat and purred.", "zz."], [1]),
             ChoiceTask("He tied his", ["shoes before the run.", "xqz."], [0])]
    buf = write_multiple_choice(tasks)
    back = load_multiple_choice(buf)
    assert [(t.context, t.choices, t.gold) for t in back] == [(t.context, t.choices, t.gold) for t in tasks]
    s = score_choices(back, tokenize, bigram_logits, "multiple-choice")
    assert (s.n_done, s.n_correct) == (2, 2)
    assert len(load_multiple_choice(buf, n_tasks=1)) == 1
    with pytest.raises(InputError, match="truncated|declares"):
        load_multiple_choice(buf[:20])
