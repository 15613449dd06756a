"""The unbiased test set T ⊂ M (paper Sect. 4.1.6).

T compares the target with the competitors on images none of them was tuned on: out-of-domain
images are excluded, at most ``per_class`` images share a main foreground class (class diversity),
no image used for fine-tuning is included, and T has ``size`` images. The paper does not say which
of the eligible images are taken; segmend draws them uniformly with a seeded generator (a draw by
discrepancy or by score would bias T towards the selection it is meant to evaluate).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

import numpy as np


def unbiased_test_set(
    candidates: Sequence[str],
    main_class: Mapping[str, int],
    out_of_domain: Collection[str] = (),
    used_for_training: Collection[str] = (),
    size: int = 30,
    per_class: int = 4,
    seed: int = 0,
) -> list[str]:
    """Draw T from M.

    Args:
        candidates: M.
        main_class: image id -> its main foreground class (the class with the largest predicted
            foreground area, :func:`~segmend.mad.partition.main_foreground_class`; -1 = none, which
            counts as one more class for the cap).
        out_of_domain: ids any rater marked out of domain.
        used_for_training: ids used to fine-tune the target (S of this and earlier rounds).
        size: size of T (paper: 30); fewer if fewer images qualify.
        per_class: at most this many images per main foreground class (paper: 4).
        seed: seed of the draw; the same inputs and seed give the same T.

    Returns:
        T, in the order drawn.

    Raises:
        ValueError: If ``size`` or ``per_class`` is negative or a candidate has no main class.

    """
    if size < 0 or per_class < 0:
        raise ValueError(f"size and per_class must be non-negative; found size={size}, per_class={per_class}.")
    missing = [image for image in candidates if image not in main_class]
    if missing:
        raise ValueError(f"main_class has no entry for {len(missing)} candidates, e.g. {missing[:5]}.")
    excluded = set(out_of_domain) | set(used_for_training)
    eligible = [image for image in dict.fromkeys(candidates) if image not in excluded]
    order = np.random.default_rng(seed).permutation(len(eligible))
    taken: list[str] = []
    per: dict[int, int] = {}
    for index in order.tolist():
        if len(taken) >= size:
            break
        image = eligible[index]
        k = int(main_class[image])
        if per.get(k, 0) < per_class:
            per[k] = per.get(k, 0) + 1
            taken.append(image)
    return taken
