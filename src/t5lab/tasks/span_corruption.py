"""T5 span corruption as a pure function on token id lists.

Raffel et al. (2020), "Exploring the Limits of Transfer Learning with a Unified Text-to-Text
Transformer", sec. 3.1.4 and 3.3.4: about ``noise_density`` (15%) of the tokens are dropped in
spans of mean length ``mean_span_length`` (3); each dropped span is replaced in the input by one
sentinel, and the target lists each sentinel followed by the tokens it hides::

    tokens:  Thank you for inviting me to your party last week .
    input:   Thank you <extra_id_0> me to your party <extra_id_1> week .
    target:  <extra_id_0> for inviting <extra_id_1> last

The span layout follows ``random_spans_noise_mask`` of the T5 code base: the number of noisy
tokens is ``round(length * noise_density)`` (at least 1, at most ``length - 1``), the number of
spans is ``round(noisy / mean_span_length)`` (at least 1), both the noisy and the clean tokens are
split into that many non-empty segments uniformly at random, the sequence alternates clean,
noisy, clean, noisy, ... starting with a clean segment, and (``random_roll``, on by default, as
T5's later ``random_roll=True``) the whole layout is rotated by a random offset. Sentinel ``i`` is ``sentinel_ids[i]``:
pass :func:`t5lab.tokenizers.sentinel_ids` (``<extra_id_0>``, ``<extra_id_1>``, ..., which T5
vocabularies place at decreasing ids).

Pass token ids *without* the trailing ``</s>``; append eos to both sides afterwards.
"""

from __future__ import annotations

import random
from collections.abc import Sequence


def _segment(rng: random.Random, num_items: int, num_segments: int) -> list[int]:
    """Split ``num_items`` into ``num_segments`` positive lengths, uniformly over compositions."""
    cuts = sorted(rng.sample(range(1, num_items), num_segments - 1))
    bounds = [0, *cuts, num_items]
    return [b - a for a, b in zip(bounds, bounds[1:])]


def noise_span_lengths(
    length: int, noise_density: float, mean_span_length: float, rng: random.Random, max_spans: int | None = None
) -> list[tuple[int, int]]:
    """``(clean, noisy)`` segment lengths covering ``length`` tokens, in order (T5's layout).

    Raises:
        ValueError: If ``noise_density`` is not in (0, 1) or ``mean_span_length`` < 1.
    """
    if not 0.0 < noise_density < 1.0:
        raise ValueError(f"noise_density={noise_density}: must lie strictly between 0 and 1 (T5 uses 0.15)")
    if mean_span_length < 1.0:
        raise ValueError(f"mean_span_length={mean_span_length}: must be >= 1 (T5 uses 3)")
    if length < 2:
        return [(length, 0)]  # nothing can be masked while keeping a clean token
    num_noise = min(max(round(length * noise_density), 1), length - 1)
    num_spans = max(round(num_noise / mean_span_length), 1)
    # each span needs >= 1 noisy and >= 1 clean token, and a sentinel of its own
    num_spans = min(num_spans, num_noise, length - num_noise, max_spans or num_spans)
    noisy = _segment(rng, num_noise, num_spans)
    clean = _segment(rng, length - num_noise, num_spans)
    return list(zip(clean, noisy))


def noise_mask(
    length: int,
    noise_density: float,
    mean_span_length: float,
    rng: random.Random,
    random_roll: bool = True,
    max_spans: int | None = None,
) -> list[bool]:
    """T5's ``random_spans_noise_mask``: True at the tokens to drop.

    With ``random_roll`` the mask is rotated by a random offset, as T5's ``random_roll=True``
    does: without it a text short enough for a single span always loses its *last* tokens.
    """
    # a roll can cut the last span in two (end + start), so keep one sentinel in reserve
    reserve = 1 if random_roll and max_spans is not None else 0
    cap = None if max_spans is None else max(max_spans - reserve, 1)
    spans = noise_span_lengths(length, noise_density, mean_span_length, rng, max_spans=cap)
    mask = [m for clean, noisy in spans for m in [False] * clean + [True] * noisy]
    if random_roll and length > 1:
        offset = rng.randrange(length)
        mask = mask[offset:] + mask[:offset]
    return mask


def span_corruption(
    ids: Sequence[int],
    sentinel_ids: Sequence[int],
    noise_density: float = 0.15,
    mean_span_length: float = 3.0,
    rng: random.Random | int | None = None,
    random_roll: bool = True,
) -> tuple[list[int], list[int]]:
    """Corrupt ``ids`` with T5 span corruption.

    Args:
        ids: Token ids of one text, without the trailing eos.
        sentinel_ids: Ids of ``<extra_id_0>``, ``<extra_id_1>``, ...; the ``i``-th dropped span
            (left to right) gets ``sentinel_ids[i]``. With fewer sentinels than spans, fewer
            (longer) spans are used.
        noise_density: Fraction of tokens to drop (T5: 0.15).
        mean_span_length: Mean length of a dropped span (T5: 3).
        rng: A ``random.Random`` or an int seed (None: seed 0, so the call is deterministic).
        random_roll: Rotate the span layout by a random offset (T5's ``random_roll``), so spans
            can start anywhere, the first token included.

    Returns:
        ``(input_ids, target_ids)``; :func:`reconstruct` inverts it.

    Raises:
        ValueError: Bad density or span length, no sentinels, or ``ids`` that contain a sentinel.
    """
    if not sentinel_ids:
        raise ValueError("span_corruption needs sentinel ids; build the tokenizer with extra_ids > 0")
    sentinels = set(sentinel_ids)
    if any(t in sentinels for t in ids):
        raise ValueError("ids already contain a sentinel token; span-corrupt raw text only")
    if not isinstance(rng, random.Random):
        rng = random.Random(0 if rng is None else rng)
    mask = noise_mask(len(ids), noise_density, mean_span_length, rng, random_roll, max_spans=len(sentinel_ids))
    inputs: list[int] = []
    targets: list[int] = []
    span = -1
    for i, (token, noisy) in enumerate(zip(ids, mask)):
        if not noisy:
            inputs.append(token)
            continue
        if i == 0 or not mask[i - 1]:  # a new span starts: one sentinel on each side
            span += 1
            inputs.append(sentinel_ids[span])
            targets.append(sentinel_ids[span])
        targets.append(token)
    return inputs, targets


def reconstruct(input_ids: Sequence[int], target_ids: Sequence[int], sentinel_ids: Sequence[int]) -> list[int]:
    """Undo :func:`span_corruption`: put each sentinel's hidden tokens back in the input.

    Raises:
        ValueError: If a sentinel of the input has no span in the target.
    """
    sentinels = set(sentinel_ids)
    hidden: dict[int, list[int]] = {}
    current: int | None = None
    for t in target_ids:
        if t in sentinels:
            current = t
            hidden[current] = []
        elif current is not None:
            hidden[current].append(t)
    out: list[int] = []
    for t in input_ids:
        if t in sentinels:
            if t not in hidden:
                raise ValueError(f"sentinel {t} of the input has no span in the target")
            out.extend(hidden[t])
        else:
            out.append(t)
    return out


def span_corrupt_text(
    tokenizer,
    text: str,
    rng: random.Random | int | None = None,
    noise_density: float = 0.15,
    mean_span_length: float = 3.0,
) -> tuple[list[int], list[int]]:
    """Tokenize ``text`` and span-corrupt it; both sides end with the tokenizer's eos, as T5 trains.

    Args:
        tokenizer: A tokenizer from :func:`t5lab.tokenizers.build_tokenizer` (or any with
            ``<extra_id_N>`` sentinels and an eos token).
        text: One text sample.
        rng: ``random.Random`` or seed.
        noise_density: Fraction of tokens to drop.
        mean_span_length: Mean length of a dropped span.

    Returns:
        ``(input_ids, target_ids)``, each ending with ``eos_token_id``.
    """
    from t5lab.tokenizers import sentinel_ids

    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    inputs, targets = span_corruption(ids, sentinel_ids(tokenizer), noise_density, mean_span_length, rng)
    eos = tokenizer.eos_token_id
    return inputs + [eos], targets + [eos]
