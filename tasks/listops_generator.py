"""The LRA ListOps generator: the draws of google-research/long-range-arena `lra_benchmarks/data/listops.py`, fast.

The reference draws a tree recursively (`generate_tree` below is that code, kept as the specification), renders it
with every pair in parentheses (`to_string`), evaluates it (`to_value`), keeps the distinct expressions whose
token count lies strictly between min_length and max_length, and splits them into train/val/test.

Seeding: the reference draws from Python's module-level `random`, which it never seeds (so it is seeded from the
OS at import), and splits in the iteration order of a `set` of trees; its data cannot be regenerated. We make the
same draws in the same order from `random.Random(seed)` (for one seed, `random.seed(seed)` followed by the
reference's `generate_tree` gives the same trees) and split in the order of first appearance, so a set is a
function of its settings. That stream is the contract: the fast path below writes byte-identical files
(tests/test_listops.py holds the sha256 of sets made by the reference code).

Why the rest of this module exists: at LRA size (100,000 expressions of 500-2,000 tokens, about 1.2 million draws,
11 of 12 rejected) the reference takes about 3 minutes on one core. Two changes, neither changing a draw:
- `_draw_function` makes the reference's calls to the generator itself (`random()`, and the `getrandbits` calls
  that `randint` and `choice` make, rejection loop included) and renders the source string and value as it goes,
  with no tree objects; an expression that reaches max_length tokens is finished without rendering. It counts the
  32-bit words it consumes (`random()` takes two, `getrandbits(k <= 32)` one): its position in the stream.
- The stream is cut into segments drawn by a pool of processes (`_segments`). Where a segment begins an expression
  may be under way, so a worker starts a little before its segment, drawing expressions that may not be the real
  ones; but the sequence of expression starts is a deterministic function of the stream, so once the worker's
  sequence reaches a position that the true sequence also reaches, the two agree from there on. The parent takes
  a worker's expressions only from the true position where the previous segment ended; where the worker's
  sequence does not contain it, the parent draws from there itself until the two meet. The result never depends
  on the number of processes.
`_check_fast_path` compares the fast path with the reference (trees, and the stream position it counts) once per
process; on a Python whose `random` draws differently it falls back to the reference, with a warning. (Python 3.11,
3.12 and 3.13 draw alike.)
"""

from __future__ import annotations

import bisect
import ctypes
import functools
import multiprocessing
import multiprocessing.pool
import os
import random
import signal
import statistics
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harness.errors import ConfigError
from harness.progress import bar as progress_bar

MIN, MAX, MED, SUM_MOD, END = "[MIN", "[MAX", "[MED", "[SM", "]"
OPERATORS = (MIN, MAX, MED, SUM_MOD)
VALUE_P = 0.25  # the reference's name for the probability that a node above max_depth is an operator, not a digit


@dataclass(frozen=True)
class GeneratorSettings:
    """The LRA generator's settings; their defaults are the LRA release's.

    n_train = n_val = 0 with n_test > 0 describes a test-only set (e.g. longer expressions, its own seed, to test a
    model trained on another set)."""

    n_train: int = 96_000
    n_val: int = 2_000
    n_test: int = 2_000
    # Exclusive bounds on the tokens as the reference counts them: digits, operators and ']', no parentheses.
    min_length: int = 500
    max_length: int = 2_000
    max_depth: int = 10
    max_args: int = 10
    seed: int = 0

    @property
    def sizes(self) -> dict[str, int]:
        return {"train": self.n_train, "val": self.n_val, "test": self.n_test}


# ----------------------------------------------------------------------------------------------------------------
# The reference, kept as the specification


# The reference's tree: a digit, or nested pairs ((((op, a1), a2), ...), "]"), built left to right.
Tree = int | str | tuple[Any, Any]


def generate_tree(rng: random.Random, depth: int, max_depth: int, max_args: int) -> tuple[Tree, int]:
    """A random expression and its length in tokens, drawn exactly as the reference draws them."""
    r = rng.random() if depth < max_depth else 1.0
    if r > VALUE_P:
        return rng.choice(range(10)), 1
    length = 2  # the operator and the closing bracket
    values = []
    for _ in range(rng.randint(2, max_args)):
        sub, sub_length = generate_tree(rng, depth + 1, max_depth, max_args)
        values.append(sub)
        length += sub_length
    tree: Tree = (rng.choice(OPERATORS), values[0])
    for value in values[1:]:
        tree = (tree, value)
    return (tree, END), length


def to_string(tree: Tree) -> str:
    """The reference's source string: every pair in parentheses, e.g. `( ( ( [MAX 2 ) 9 ) ] )`."""
    if isinstance(tree, tuple):
        return f"( {to_string(tree[0])} {to_string(tree[1])} )"
    return str(tree)


def apply(op: str, args: list[int]) -> int:
    if op == MIN:
        return min(args)
    if op == MAX:
        return max(args)
    if op == MED:
        return int(statistics.median(args))  # the reference's int(np.median(...)): halves round down
    if op == SUM_MOD:
        return sum(args) % 10
    raise ValueError(f"unknown operator {op!r}")


def to_value(tree: Tree) -> int:
    """The value of an expression tree."""
    if isinstance(tree, int):
        return tree
    args: list[int] = []
    node = tree[0]  # (((op, a1), a2), ...): peel the arguments off from the right
    while isinstance(node, tuple) and not (isinstance(node[0], str) and node[0] in OPERATORS):
        args.append(to_value(node[1]))
        node = node[0]
    op, first = node
    return apply(op, [to_value(first), *reversed(args)])


# ----------------------------------------------------------------------------------------------------------------
# Settings


def longest_tree(max_depth: int, max_args: int) -> int:
    """The most tokens a tree can have: every node above max_depth an operator with max_args arguments."""
    length = 1  # a node at max_depth is always a digit
    for _ in range(max_depth - 1):
        length = 2 + max_args * length
    return length


# Draws in a row without a new example after which the settings are taken to admit too few distinct
# expressions (the default settings accept about one draw in twelve).
STALL_LIMIT = 1_000_000


@functools.lru_cache(maxsize=64)
def acceptance(settings: GeneratorSettings) -> float | None:
    """The probability that one draw has min_length < tokens < max_length, computed exactly (None where the
    computation would be too large: max_args * max_length above 2^22).

    The token count of a subtree at depth d is 1 (a digit) with probability 1 - VALUE_P, else 2 plus the sum of n
    independent subtrees at depth d + 1, n uniform in 2..max_args: from the deepest level up, one convolution
    power series per level, by FFT (lengths cut at max_length, long enough that nothing wraps around). Rounding
    leaves about 1e-16 where the exact probability is 0.
    """
    s = settings
    size = 1 << (s.max_args * s.max_length).bit_length()
    if size > 1 << 22:
        return None
    pmf = np.zeros(size)
    pmf[1] = 1.0  # at max_depth, a digit
    for _ in range(s.max_depth - 1):
        f = np.fft.rfft(pmf)
        power, total = f * f, np.zeros_like(f)
        for _ in range(2, s.max_args + 1):
            total += power
            power *= f
        children = np.fft.irfft(total / (s.max_args - 1), size)
        pmf = np.zeros(size)
        pmf[1] = 1 - VALUE_P
        pmf[2: s.max_length] += VALUE_P * np.clip(children[: s.max_length - 2], 0, None)
    return float(pmf[s.min_length + 1: s.max_length].sum())


def check_settings(settings: GeneratorSettings, prefix: str = "") -> None:
    """Reject settings under which generation could never finish, before it starts; `prefix` + field names
    the option in messages (e.g. "task.")."""
    s, k = settings, prefix
    test_only = s.n_train == s.n_val == 0 and s.n_test >= 1
    if min(s.n_train, s.n_val, s.n_test) < 1 and not test_only:
        raise ConfigError(f"ListOps needs at least one example per split, or {k}n_train={k}n_val=0 for a test-only "
                          f"set; got {k}n_train/{k}n_val/{k}n_test = {s.n_train}/{s.n_val}/{s.n_test}")
    if s.max_args < 2 or s.max_depth < 1:
        raise ConfigError(f"ListOps {k}max_args must be at least 2 and {k}max_depth at least 1, got "
                          f"{k}max_args={s.max_args}, {k}max_depth={s.max_depth}")
    if s.max_length - s.min_length < 2:
        raise ConfigError(f"no ListOps length lies strictly between {k}min_length={s.min_length} and "
                          f"{k}max_length={s.max_length}; widen the window")
    longest = longest_tree(s.max_depth, s.max_args)
    if longest <= s.min_length:
        raise ConfigError(f"ListOps trees with {k}max_depth={s.max_depth}, {k}max_args={s.max_args} have "
                          f"at most {longest} tokens, not more than {k}min_length={s.min_length}; "
                          f"lower {k}min_length or raise {k}max_depth/{k}max_args")
    rate = acceptance(settings)
    if rate is not None and rate * STALL_LIMIT < 1:  # generation would stall: refused before a draw
        wanted = sum(s.sizes.values())
        odds = (f"are 1 draw in {1 / rate:,.0f} under {k}max_depth={s.max_depth}, {k}max_args={s.max_args}: "
                f"{wanted:,} of them take about {wanted / rate:,.0f} draws") if rate > 1e-12 else \
            f"are never drawn under {k}max_depth={s.max_depth}, {k}max_args={s.max_args}"
        raise ConfigError(f"ListOps expressions of {k}min_length={s.min_length} < tokens < {k}max_length="
                          f"{s.max_length} {odds}; lower the lengths, or raise {k}max_depth or {k}max_args (deeper "
                          f"or wider expressions: another distribution)")


# ----------------------------------------------------------------------------------------------------------------
# The same draws, fast

_DIGITS = tuple(str(d) for d in range(10))
_MEDIAN = OPERATORS.index(MED)

# (tokens, words consumed, source or None, value) of one expression
Draw = tuple[int, int, str | None, int]


def _value(op: int, args: list[int]) -> int:
    if op == _MEDIAN:  # the reference's int(np.median(...)): the mean of the middle two, rounded down
        args.sort()
        half = len(args) // 2
        return args[half] if len(args) % 2 else (args[half - 1] + args[half]) // 2
    return apply(OPERATORS[op], args)


def _draw_function(rng: random.Random, max_depth: int, max_args: int, max_length: int) -> Callable[[], Draw]:
    """A function that draws the next expression from `rng` as `generate_tree(rng, 1, ...)` does.

    `rng.choice(seq)` is `seq[rng._randbelow(len(seq))]` and `rng.randint(2, m)` is `2 + rng._randbelow(m - 1)`,
    where `_randbelow(n)` draws `getrandbits(n.bit_length())` until the result is below n: those calls are made
    here directly, in the same order.
    """
    rand, bits = rng.random, rng.getrandbits
    arity_bits, arities = (max_args - 1).bit_length(), max_args - 1
    op_bits, n_ops = len(OPERATORS).bit_length(), len(OPERATORS)

    def operator(depth: int, budget: int) -> Draw:
        """An operator node at `depth`, its `random()` drawn: its tokens, the words it consumed, its source and
        value. The source is None (and nothing rendered) once the expression would have `budget` tokens or more;
        the draws are made all the same."""
        n = bits(arity_bits)
        words = 1
        while n >= arities:
            n = bits(arity_bits)
            words += 1
        tokens, parts, values = 2, [], []
        child = depth + 1
        for _ in range(n + 2):
            if child < max_depth:
                words += 2
                if rand() <= VALUE_P:
                    sub_tokens, sub_words, source, value = operator(child, budget - tokens if parts is not None else 0)
                    tokens += sub_tokens
                    words += sub_words
                    if source is None:
                        parts = None
                    elif parts is not None:
                        parts.append(source)
                        values.append(value)
                    continue
            # A digit, as leaf() draws it: inlined, which saves a fifth of the time (most nodes are digits).
            digit = bits(4)
            words += 1
            while digit >= 10:
                digit = bits(4)
                words += 1
            tokens += 1
            if parts is not None:
                parts.append(_DIGITS[digit])
                values.append(digit)
        op = bits(op_bits)
        words += 1
        while op >= n_ops:
            op = bits(op_bits)
            words += 1
        if parts is None or tokens >= budget:
            return tokens, words, None, 0
        # ( ( ( [MAX 2 ) 9 ) ] ): one "(" per argument and one for the "]", each argument followed by ")"
        return tokens, words, f"{'( ' * (n + 3)}{OPERATORS[op]} {' ) '.join(parts)} ) ] )", _value(op, values)

    def leaf() -> tuple[int, int]:
        """A digit and the words it consumed."""
        digit, words = bits(4), 1
        while digit >= 10:
            digit = bits(4)
            words += 1
        return digit, words

    def draw() -> Draw:
        words = 0
        if max_depth > 1:
            words = 2
            if rand() <= VALUE_P:
                tokens, sub_words, source, value = operator(1, max_length)
                return tokens, words + sub_words, source, value
        digit, digit_words = leaf()
        return 1, words + digit_words, (_DIGITS[digit] if max_length > 1 else None), digit

    return draw


@dataclass
class Segment:
    """Expressions drawn one after another: where each started in the stream (32-bit words from the seed), where
    the last one ended, and those kept as (index into starts, source, value): min_length < tokens < max_length."""

    starts: list[int] = field(default_factory=list)
    end: int = 0
    found: list[tuple[int, str, int]] = field(default_factory=list)


def _walk(draw: Callable[[], Draw], position: int, stop: int, min_length: int,
          meet: frozenset[int] = frozenset()) -> Segment:
    """Draw expressions from `position` (where `draw`'s generator stands) until the position reaches `stop` or one
    of `meet`."""
    segment = Segment()
    while position < stop and position not in meet:
        segment.starts.append(position)
        tokens, words, source, value = draw()
        position += words
        if source is not None and tokens > min_length:  # a source is rendered only below max_length
            segment.found.append((len(segment.starts) - 1, source, value))
    segment.end = position
    return segment


def _stream_at(state: tuple[Any, ...], words: int) -> random.Random:
    """A generator in `state`, then advanced by `words` 32-bit words."""
    rng = random.Random()
    rng.setstate(state)
    for _ in range(words // (1 << 20)):
        rng.getrandbits(32 << 20)  # getrandbits(32 * n) consumes exactly n words
    if words % (1 << 20):
        rng.getrandbits(32 * (words % (1 << 20)))
    return rng


def _walk_from(settings: GeneratorSettings, state: tuple[Any, ...], start: int, stop: int) -> Segment:
    """A worker's task: the expressions drawn from `start` (the generator in `state` there) until `stop`."""
    s = settings
    return _walk(_draw_function(_stream_at(state, 0), s.max_depth, s.max_args, s.max_length), start, stop,
                 s.min_length)


# Segments of the stream, in 32-bit words: about 900 LRA-size expressions (half a second of one core) per
# segment, each begun OVERLAP words early. Two sequences of expression starts met within 25,000 words in each of
# 60 trials at LRA settings; where they have not met, the parent draws until they do.
SEGMENT_WORDS = 1 << 22
OVERLAP_WORDS = 1 << 18


def _worker_init(parent: int) -> None:
    """Ctrl-C goes to the whole process group: only the parent acts on it (it ends the pool). A stop handler the
    parent installed must not keep the pool's SIGTERM from ending a worker. A parent killed outright (SIGTERM's
    default, SIGKILL) cannot end the pool: the kernel then kills the workers (Linux), which would otherwise finish
    their segment and print a broken pipe."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # also discards a Ctrl-C that came while blocked (_pool)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_DFL)
    try:
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # not Linux: a worker ends when it next finds the parent's pipe closed
    if os.getppid() != parent:  # the parent died before prctl
        os._exit(1)


_PR_SET_PDEATHSIG = 1  # prctl(2)


def _pool(workers: int) -> multiprocessing.pool.Pool:
    """A pool of forked workers that Ctrl-C cannot reach before `_worker_init` ignores it: a worker forked with
    SIGINT blocked holds a Ctrl-C of that moment pending, which ignoring it discards. The parent's own Ctrl-C of
    that moment is delivered once it unblocks."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        return multiprocessing.get_context("fork").Pool(workers, _worker_init, (os.getpid(),))
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def default_workers() -> int:
    """The processes generation may use: the CPUs this process may run on (a SLURM allocation, taskset)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _can_fork() -> bool:
    """Can this process start a pool of forked workers? (Not on Windows; not from a daemonic process.)"""
    return "fork" in multiprocessing.get_all_start_methods() and not multiprocessing.current_process().daemon


def _segments(settings: GeneratorSettings, workers: int) -> Iterator[Segment]:
    """The stream's expressions, in order, as segments. The first SEGMENT_WORDS are drawn here; if more are needed,
    the rest by `workers` processes (module docstring), each segment checked to continue the true sequence."""
    s = settings
    draw = _draw_function(random.Random(s.seed), s.max_depth, s.max_args, s.max_length)
    position, size = 0, 1 << 12  # small sets are done within the first few thousand words
    while position < SEGMENT_WORDS or workers <= 1 or not _can_fork():
        segment = _walk(draw, position, position + size, s.min_length)  # each where the last one ended
        yield segment
        position, size = segment.end, min(2 * size, SEGMENT_WORDS)
    yield from _pooled_segments(settings, workers, position)


def _pooled_segments(settings: GeneratorSettings, workers: int, position: int) -> Iterator[Segment]:
    """Segments [k W - OVERLAP, (k + 1) W) of the stream (W = SEGMENT_WORDS), from the one holding `position`,
    drawn by a pool, continuing the true sequence of expressions from `position`."""
    s = settings
    master, master_at = random.Random(s.seed), 0  # the generator's state at the start of each segment handed out
    pool = _pool(workers)
    pending: deque[tuple[int, int, tuple[Any, ...], Any]] = deque()
    try:
        k = position // SEGMENT_WORDS
        while True:
            while len(pending) < 2 * workers:  # enough work queued to keep every worker busy
                start, stop = k * SEGMENT_WORDS - OVERLAP_WORDS, (k + 1) * SEGMENT_WORDS
                master = _stream_at(master.getstate(), start - master_at)
                master_at = start
                state = master.getstate()
                pending.append((start, stop, state, pool.apply_async(_walk_from, (settings, state, start, stop))))
                k += 1
            start, stop, state, result = pending[0]
            segment = result.get()
            pending.popleft()  # only now: a result being received is one `_end_pool` must wait for
            if position >= stop:
                continue  # an expression begun in an earlier segment ran past this one
            i = bisect.bisect_left(segment.starts, position)
            if i == len(segment.starts) or segment.starts[i] != position:
                # The worker's sequence has not met the true one by `position`: draw from there until it does.
                draw = _draw_function(_stream_at(state, position - start), s.max_depth, s.max_args, s.max_length)
                bridge = _walk(draw, position, stop, s.min_length, meet=frozenset(segment.starts))
                yield bridge
                position = bridge.end
                if position >= stop:
                    continue
                i = bisect.bisect_left(segment.starts, position)
            yield _tail(segment, i)
            position = segment.end
    finally:
        _end_pool(pool, [result for *_, result in pending])


def _end_pool(pool: multiprocessing.pool.Pool, results: list[Any], patience_s: float = 60.0) -> None:
    """Terminate the pool once none of its workers is sending a result. Pool.terminate while a worker writes a
    large result to the pipe can hang for ever: the pool stops reading results, and the writer holds the queue's
    lock that terminate needs. The segments still pending take about a second to finish (a worker that died would
    never finish its own: hence the patience)."""
    deadline = time.monotonic() + patience_s
    for result in results:
        result.wait(max(0.0, deadline - time.monotonic()))
    pool.terminate()
    pool.join()


def _tail(segment: Segment, i: int) -> Segment:
    """The expressions of `segment` from its i-th on."""
    return Segment(segment.starts[i:], segment.end, [(j - i, source, value) for j, source, value in segment.found
                                                     if j >= i])


def _reference_segments(settings: GeneratorSettings) -> Iterator[Segment]:
    """The reference's draws, as segments of one expression (for a Python whose `random` draws otherwise)."""
    rng = random.Random(settings.seed)
    while True:
        tree, length = generate_tree(rng, 1, settings.max_depth, settings.max_args)
        found = [(0, to_string(tree), to_value(tree))] if settings.min_length < length < settings.max_length else []
        yield Segment([0], 0, found)


_CHECKED: dict[str, bool] = {}


def _check_fast_path() -> bool:
    """Does the fast path draw what the reference draws on this Python (trees, values, and the position it counts)?
    Checked once per process, over 1,700 expressions of three settings (0.1 s)."""
    if "fast" not in _CHECKED:
        ok = True
        for seed, max_depth, max_args, max_length, draws in ((1, 10, 10, 300, 300), (2, 6, 3, 40, 700),
                                                             (3, 4, 17, 600, 700)):
            reference, fast = random.Random(seed), random.Random(seed)
            draw = _draw_function(fast, max_depth, max_args, max_length)
            words = 0
            for _ in range(draws):
                tree, length = generate_tree(reference, 1, max_depth, max_args)
                tokens, used, source, value = draw()
                words += used
                ok &= tokens == length and (source is None if length >= max_length else
                                            source == to_string(tree) and value == to_value(tree))
            ok &= _stream_at(random.Random(seed).getstate(), words).getstate() == reference.getstate() == \
                fast.getstate()
        _CHECKED["fast"] = ok
    return _CHECKED["fast"]


def _check_stalled(settings: GeneratorSettings, found: int, wanted: int, draws: int) -> None:
    """ConfigError once `draws` draws in a row found no new example."""
    if draws >= STALL_LIMIT:
        raise ConfigError(f"ListOps generation found only {found} of {wanted} distinct expressions with "
                          f"{settings.min_length} < tokens < {settings.max_length} after {STALL_LIMIT:,} more draws; "
                          f"widen the length window, raise max_depth/max_args or ask for fewer")


def generate(settings: GeneratorSettings, progress: bool = False,
             workers: int | None = None) -> dict[str, list[tuple[str, int]]]:
    """Distinct expressions with min_length < length < max_length, split into train/val/test in order of first
    appearance (a function of the settings, whatever `workers`: the processes to use, default all CPUs).
    Deduplicating by source string is deduplicating by tree: the rendering is one-to-one."""
    check_settings(settings)
    if _check_fast_path():
        segments = _segments(settings, default_workers() if workers is None else workers)
    else:
        warnings.warn("this Python's `random` does not draw as the fast ListOps generator assumes; generating with "
                      "the reference code (minutes at LRA size)", stacklevel=2)
        segments = _reference_segments(settings)
    wanted = sum(settings.sizes.values())
    seen: dict[str, int] = {}
    draws = last_new = 0  # draws made, and the draw that found the latest new example
    bar = progress_bar(total=wanted, desc="generating ListOps", unit="expr", disable=not progress)
    try:
        for segment in segments:
            for i, source, value in segment.found:
                if source in seen:
                    continue
                _check_stalled(settings, len(seen), wanted, draws + i - last_new)  # the draws before this one
                seen[source] = value
                last_new = draws + i + 1
                if len(seen) == wanted:
                    break
            if len(seen) == wanted:
                break
            bar.update(len(seen) - bar.n)
            draws += len(segment.starts)
            _check_stalled(settings, len(seen), wanted, draws - last_new)
    finally:
        segments.close()  # ends the pool, also on Ctrl-C
        bar.close()
    rows = list(seen.items())
    cut1, cut2 = settings.n_train, settings.n_train + settings.n_val
    return {"train": rows[:cut1], "val": rows[cut1:cut2], "test": rows[cut2:]}
