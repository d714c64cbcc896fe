"""HellaSwag, Winogrande and multiple-choice scoring with llama-perplexity's task files and rules.

Each candidate continuation is scored by the mean log-probability of its tokens (llama.cpp's
`acc_norm`-style scoring); llama.cpp shares the common prefix of the candidates in one batch,
which gives the same numbers as scoring each full sequence on its own, as done here.
Task subsets are drawn with llama.cpp's own generators (std::mt19937 seeded with 1), so
`--hellaswag-tasks N` and friends pick the same tasks llama-perplexity picks.
"""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from llmtk.errors import InputError
from llmtk.registry import Registry

TokenizeFn = Callable[[str], list[int]]          # text -> ids, BOS as the vocab says
LogitsFn = Callable[[np.ndarray], np.ndarray]    # ids (n,) -> logits (n, n_vocab)


class MT19937:
    """The 32-bit Mersenne Twister of C++'s std::mt19937 (for llama.cpp's task selection)."""

    def __init__(self, seed: int = 1):
        self.mt = [0] * 624
        self.mt[0] = seed & 0xFFFFFFFF
        for i in range(1, 624):
            self.mt[i] = (1812433253 * (self.mt[i - 1] ^ (self.mt[i - 1] >> 30)) + i) & 0xFFFFFFFF
        self.index = 624

    def __call__(self) -> int:
        if self.index >= 624:
            mt = self.mt
            for i in range(624):
                y = (mt[i] & 0x80000000) | (mt[(i + 1) % 624] & 0x7FFFFFFF)
                mt[i] = mt[(i + 397) % 624] ^ (y >> 1) ^ (0x9908B0DF if y & 1 else 0)
            self.index = 0
        y = self.mt[self.index]
        self.index += 1
        y ^= y >> 11
        y ^= (y << 7) & 0x9D2C5680
        y ^= (y << 15) & 0xEFC60000
        y ^= y >> 18
        return y

    def uniform_int(self, lo: int, hi: int) -> int:
        """libstdc++'s std::uniform_int_distribution<size_t>(lo, hi) on this engine (Lemire's method)."""
        urange = hi - lo
        if urange == 0xFFFFFFFF:
            return lo + self()
        uerange = urange + 1
        product = self() * uerange
        low = product & 0xFFFFFFFF
        if low < uerange:
            threshold = (-uerange) % uerange
            while low < threshold:
                product = self() * uerange
                low = product & 0xFFFFFFFF
        return lo + (product >> 32)

    def pick_without_replacement(self, n: int, k: int) -> list[int]:
        """llama.cpp's winogrande/multiple-choice draw: swap-with-last on a float scale."""
        aux = list(range(n))
        scale = np.float32(1.0) / (np.float32(1.0) + np.float32(0xFFFFFFFF))
        picked = []
        for _ in range(k):
            j = int(np.float32(np.float32(scale * np.float32(self())) * np.float32(len(aux))))
            picked.append(aux[j])
            aux[j] = aux[-1]
            aux.pop()
        return picked


@dataclass
class ChoiceTask:
    """A context and candidate continuations; `gold` are the indices of correct candidates."""

    context: str
    choices: list[str]
    gold: list[int]
    joiner: str = " "
    suffix: str = ""
    extra: dict = field(default_factory=dict)


@dataclass
class TaskScore:
    name: str
    n_done: int
    n_correct: int
    running: list[float]
    n_answers: int = 0

    @property
    def accuracy(self) -> float:
        return self.n_correct / self.n_done if self.n_done else 0.0

    @property
    def stderr(self) -> float:
        p, n = self.accuracy, self.n_done
        return math.sqrt(p * (1 - p) / (n - 1)) if n > 1 else 0.0

    def wilson_interval(self) -> tuple[float, float]:
        """95% Wilson score interval, as llama-perplexity prints it for HellaSwag."""
        za = 1.95996398454
        n, freq = self.n_done, self.accuracy
        z = za * za / n
        cnf = z * math.sqrt(n * (4.0 * freq * (1 - freq) + z)) / (za + za)
        return (freq + z * 0.5 - cnf) / (1.0 + z), (freq + z * 0.5 + cnf) / (1.0 + z)

    def to_dict(self) -> dict:
        return {"task": self.name, "n_tasks": self.n_done, "accuracy": self.accuracy, "stderr": self.stderr,
                "running": self.running}


def _token_logprobs(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """log p(target) for each row, in float64."""
    x = logits.astype(np.float64)
    m = x.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(x - m).sum(axis=1))
    return x[np.arange(len(targets)), targets] - lse


def _common_prefix(seqs: Sequence[Sequence[int]]) -> int:
    n = min(len(s) for s in seqs)
    k = 0
    while k < n and all(s[k] == seqs[0][k] for s in seqs):
        k += 1
    return k


def _mean_logprob(logits_fn: LogitsFn, ids: list[int], start: int, stop: int) -> float:
    """Mean log-prob of ids[start+1 .. stop] predicted from positions start .. stop-1."""
    if stop <= start:
        return -math.inf
    logits = logits_fn(np.asarray(ids, dtype=np.int32))
    lp = _token_logprobs(logits[start:stop], np.asarray(ids[start + 1:stop + 1]))
    return float(lp.mean())


# ---- HellaSwag ---------------------------------------------------------------------------------

def load_hellaswag(text: str) -> list[ChoiceTask]:
    """llama.cpp's HellaSwag file: 6 lines per task (context, gold index, four endings)."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines or len(lines) % 6:
        raise InputError(f"HellaSwag file has {len(lines)} lines, not a positive multiple of 6 "
                         "(context, gold index, 4 endings per task)")
    tasks = []
    for i in range(0, len(lines), 6):
        try:
            gold = int(lines[i + 1])
        except ValueError:
            raise InputError(f"HellaSwag task {i // 6 + 1}: gold index {lines[i + 1]!r} is not a number") from None
        if not 0 <= gold < 4:
            raise InputError(f"HellaSwag task {i // 6 + 1}: gold index {gold} is not 0..3")
        tasks.append(ChoiceTask(lines[i], lines[i + 2:i + 6], [gold]))
    return tasks


def select_hellaswag(tasks: list[ChoiceTask], n_tasks: int | None) -> list[ChoiceTask]:
    """llama.cpp draws tasks in random order (mt19937(1), uniform_int) even when it takes all."""
    n = len(tasks) if not n_tasks or n_tasks > len(tasks) else n_tasks
    rng, pool, out = MT19937(1), list(tasks), []
    for _ in range(n):
        idx = rng.uniform_int(0, len(pool) - 1)
        out.append(pool.pop(idx))
    return out


def score_choices(tasks: list[ChoiceTask], tokenize: TokenizeFn, logits_fn: LogitsFn, name: str,
                  progress: Callable[[int, float], None] | None = None) -> TaskScore:
    """HellaSwag / multiple-choice scoring: the candidate with the best mean log-prob wins."""
    score = TaskScore(name, 0, 0, [])
    for task in tasks:
        seqs = [tokenize(task.context + task.joiner + c) for c in task.choices]
        prefix = _common_prefix(seqs)
        if prefix == 0:
            raise InputError(f"{name}: task {score.n_done + 1} shares no prefix token across its choices")
        means = [_mean_logprob(logits_fn, s, prefix - 1, len(s) - 1) for s in seqs]
        best = int(np.argmax(means))  # first maximum, as llama.cpp's strict '>' scan
        score.n_done += 1
        score.n_answers += len(seqs)
        score.n_correct += best in task.gold
        score.running.append(score.accuracy)
        if progress:
            progress(score.n_done, score.accuracy)
    return score


# ---- Winogrande --------------------------------------------------------------------------------

def _split_csv_line(line: str) -> list[int]:
    commas, quoted = [], False
    for i, ch in enumerate(line):
        if quoted:
            quoted = ch != '"'
        elif ch == ",":
            commas.append(i)
            if len(commas) == 4:
                break
        elif ch == '"':
            quoted = True
    return commas


def load_winogrande(text: str) -> list[ChoiceTask]:
    """llama.cpp's Winogrande CSV: index,sentence with one '_',choice1,choice2,answer (1|2)."""
    tasks = []
    for n, line in enumerate(text.split("\n"), 1):
        c = _split_csv_line(line)
        if len(c) != 4:
            continue  # llama.cpp skips lines without four separators (the header, blank lines)
        sentence = line[c[0] + 2:c[1] - 1] if line[c[0] + 1] == '"' else line[c[0] + 1:c[1]]
        answer = line[c[3] + 1:].strip()
        if "_" not in sentence or answer not in ("1", "2"):
            continue
        where = sentence.index("_")
        tasks.append(ChoiceTask(sentence[:where], [line[c[1] + 1:c[2]], line[c[2] + 1:c[3]]], [int(answer) - 1],
                                joiner="", suffix=sentence[where + 1:]))
    if not tasks:
        raise InputError("no Winogrande tasks found (expected CSV rows: index,sentence with _,choice1,choice2,answer)")
    return tasks


def score_winogrande(tasks: list[ChoiceTask], tokenize: TokenizeFn, logits_fn: LogitsFn,
                     progress: Callable[[int, float], None] | None = None) -> TaskScore:
    """Score only the words after the blank when both continuations are long enough (llama.cpp)."""
    k_min_trailing_ctx = 3
    score = TaskScore("winogrande", 0, 0, [])
    for task in tasks:
        seqs = [tokenize(task.context + c + task.suffix) for c in task.choices]
        bases = [len(tokenize(task.context + c)) for c in task.choices]
        prefix = _common_prefix(seqs)
        skip_choice = all(len(s) - prefix > k_min_trailing_ctx for s in seqs)
        means = []
        for s, nb in zip(seqs, bases):
            n_base = nb if skip_choice else prefix
            last = 1 if len(s) - n_base > 1 else 0
            lo, hi = n_base - 1, len(s) - 1 - last
            means.append(np.float32(_mean_logprob(logits_fn, s, lo, hi)) if hi > lo else np.float32(-np.inf))
        result = 0 if means[0] > means[1] else 1
        score.n_done += 1
        score.n_answers += 2
        score.n_correct += result in task.gold
        score.running.append(score.accuracy)
        if progress:
            progress(score.n_done, score.accuracy)
    return score


# ---- multiple choice (binary) ------------------------------------------------------------------

def _read_string(buf: bytes, pos: int) -> tuple[str, int]:
    if pos + 4 > len(buf):
        raise InputError("multiple-choice file is truncated")
    (n,) = struct.unpack_from("<I", buf, pos)
    if pos + 4 + n > len(buf):
        raise InputError("multiple-choice file is truncated")
    return buf[pos + 4:pos + 4 + n].decode("utf-8", errors="replace"), pos + 4 + n


def _read_answers(buf: bytes, pos: int) -> tuple[list[str], list[int], int]:
    if pos + 4 > len(buf):
        raise InputError("multiple-choice file is truncated")
    (n,) = struct.unpack_from("<I", buf, pos)
    if n > 100:
        raise InputError(f"multiple-choice task has {n} answers (at most 100)")
    pos += 4
    answers = []
    for _ in range(n):
        a, pos = _read_string(buf, pos)
        answers.append(a)
    if pos + 4 * n > len(buf):
        raise InputError("multiple-choice file is truncated")
    labels = list(struct.unpack_from(f"<{n}i", buf, pos))
    return answers, labels, pos + 4 * n


def load_multiple_choice(buf: bytes, n_tasks: int | None = None) -> list[ChoiceTask]:
    """llama.cpp's binary multiple-choice file (as its TruthfulQA/ARC/MMLU converters write)."""
    if len(buf) < 4:
        raise InputError("multiple-choice file is empty")
    (n,) = struct.unpack_from("<I", buf, 0)
    if n == 0 or 4 + 4 * n > len(buf):
        raise InputError(f"multiple-choice file declares {n} tasks but is {len(buf)} bytes")
    positions = struct.unpack_from(f"<{n}I", buf, 4)
    order = range(n) if not n_tasks or n_tasks >= n else MT19937(1).pick_without_replacement(n, n_tasks)
    tasks = []
    for idx in order:
        q, pos = _read_string(buf, positions[idx])
        answers, labels, pos = _read_answers(buf, pos)
        _, _, pos = _read_answers(buf, pos)  # mc2: multiple correct answers, unused as in llama.cpp
        if not q or not answers or any(not a for a in answers):
            continue
        tasks.append(ChoiceTask(q, answers, [i for i, lab in enumerate(labels) if lab == 1]))
    return tasks


def write_multiple_choice(tasks: Sequence[ChoiceTask]) -> bytes:
    """The binary layout `load_multiple_choice` reads (to make test and custom task files)."""
    def s(x: str) -> bytes:
        b = x.encode()
        return struct.pack("<I", len(b)) + b

    def answers(ans: Sequence[str], gold: Sequence[int]) -> bytes:
        labels = [1 if i in gold else 0 for i in range(len(ans))]
        return struct.pack("<I", len(ans)) + b"".join(s(a) for a in ans) + struct.pack(f"<{len(ans)}i", *labels)

    bodies = [s(t.context) + answers(t.choices, t.gold) + answers([], []) for t in tasks]
    header = 4 + 4 * len(tasks)
    positions, off = [], header
    for b in bodies:
        positions.append(off)
        off += len(b)
    return struct.pack("<I", len(tasks)) + struct.pack(f"<{len(tasks)}I", *positions) + b"".join(bodies)


def select_winogrande(tasks: list[ChoiceTask], n_tasks: int | None) -> list[ChoiceTask]:
    if not n_tasks or n_tasks >= len(tasks):
        return tasks
    return [tasks[i] for i in MT19937(1).pick_without_replacement(len(tasks), n_tasks)]


# ---- the task registry ---------------------------------------------------------------------------

@dataclass(frozen=True)
class TaskKind:
    """One of llama-perplexity's benchmarks: how its file is read and its tasks drawn, how scored."""

    name: str
    load: Callable[[Path, int | None], list[ChoiceTask]]      # task file, tasks wanted (None: all)
    score: Callable[[list[ChoiceTask], TokenizeFn, LogitsFn, Callable[[int, float], None] | None], TaskScore]


TASKS: Registry[TaskKind] = Registry("eval task")
TASKS.add("hellaswag", TaskKind(
    "hellaswag", lambda path, n: select_hellaswag(load_hellaswag(path.read_text(encoding="utf-8")), n),
    lambda tasks, tok, logits, progress: score_choices(tasks, tok, logits, "hellaswag", progress)))
TASKS.add("winogrande", TaskKind(
    "winogrande", lambda path, n: select_winogrande(load_winogrande(path.read_text(encoding="utf-8")), n),
    score_winogrande))
TASKS.add("multiple-choice", TaskKind(
    "multiple-choice", lambda path, n: load_multiple_choice(path.read_bytes(), n),
    lambda tasks, tok, logits, progress: score_choices(tasks, tok, logits, "multiple-choice", progress)))
