"""Training plumbing shared by the translation head and the learned-feature objectives: options, seeding, device,
the inner early-stopping split."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class TrainOptions:
    """Optimiser and stopping rule of a learned-feature model (AdamW, mini-batches, early stopping).

    Attributes
    ----------
    max_epochs
        Upper bound on passes over the training rows.
    patience
        Epochs without improvement of the validation loss before stopping; the weights of the best epoch are kept.
    learning_rate
        AdamW learning rate.
    weight_decay
        AdamW decoupled weight decay.
    dropout
        Dropout probability on the inputs of every hidden layer.
    batch_size
        Rows per mini-batch (the correlation loss is computed within a batch).
    """

    max_epochs: int = 200
    patience: int = 20
    learning_rate: float = 1e-3
    weight_decay: float = 1e-2
    dropout: float = 0.25
    batch_size: int = 128

    def check(self) -> TrainOptions:
        """Raise ``ValueError`` naming the first invalid option; return ``self``."""
        for name in ("max_epochs", "patience", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1:
                msg = f"`{name}` must be a positive integer, got {v!r}."
                raise ValueError(msg)
        if not (self.learning_rate > 0) or not np.isfinite(self.learning_rate):
            msg = f"`learning_rate` must be a positive number, got {self.learning_rate!r}."
            raise ValueError(msg)
        if not (self.weight_decay >= 0) or not np.isfinite(self.weight_decay):
            msg = f"`weight_decay` must be a non-negative number, got {self.weight_decay!r}."
            raise ValueError(msg)
        if not (0 <= self.dropout < 1):
            msg = f"`dropout` must lie in [0, 1), got {self.dropout!r}."
            raise ValueError(msg)
        return self

    def record(self) -> dict[str, Any]:
        """The options as a plain dict (for ``uns[key]['params']``)."""
        return asdict(self)


def seeded_generator(random_state: int):
    """Seed torch (global and a private CPU generator) for repeatable training on the CPU; return the generator."""
    import torch

    torch.manual_seed(int(random_state))
    g = torch.Generator(device="cpu")
    g.manual_seed(int(random_state))
    return g


def ensemble_splits(
    rows: np.ndarray, groups, ensemble: bool, random_state: int
) -> list[tuple[np.ndarray, np.ndarray, str, int]]:
    """The early-stopping splits of an ensemble: ``[(fit_rows, val_rows, how, seed), ...]``.

    With ``ensemble`` and two or more sections in ``groups``, one per section held out (seed ``random_state + i``
    for the ``i``-th in sorted order); else one :func:`inner_validation_split` with seed ``random_state``.
    """
    if ensemble and groups is not None:
        g = np.asarray(groups).astype(str)
        names = np.unique(g)
        if len(names) >= 2:
            return [
                (rows[g != name], rows[g == name], f"section {str(name)!r} held out", int(random_state) + i)
                for i, name in enumerate(names)
            ]
    fit_rows, val_rows, how = inner_validation_split(rows, groups, random_state)
    return [(fit_rows, val_rows, how, int(random_state))]


def resolve_train_device(device: str | None):
    """The torch device to train on: ``device`` if given, else ``mst.settings.device`` (``"auto"``: cuda, mps, cpu)."""
    from ..._settings import settings

    return settings.resolve_device(device)


def inner_validation_split(
    train_rows: np.ndarray, groups: np.ndarray | None, random_state: int, fraction: float = 0.2
) -> tuple[np.ndarray, np.ndarray, str]:
    """Split training rows into fitting and early-stopping rows, by section when there are several.

    With two or more sections among ``train_rows``, one whole section (chosen with the seed; the section whose size
    is closest to ``fraction`` of the rows) is held out for early stopping, so that the stopping rule sees a new
    section as the test will. With one section, a seeded random ``fraction`` of its rows. Returns
    ``(fit_rows, val_rows, description)``, both sorted positions into the full table.
    """
    train_rows = np.asarray(train_rows)
    rng = np.random.default_rng(random_state)
    if groups is not None:
        g = np.asarray(groups)[train_rows].astype(str)
        names, sizes = np.unique(g, return_counts=True)
        if len(names) >= 2:
            target = fraction * len(train_rows)
            order = rng.permutation(len(names))  # ties broken by the seed
            best = order[np.argmin(np.abs(sizes[order] - target))]
            val = g == names[best]
            return np.sort(train_rows[~val]), np.sort(train_rows[val]), f"section {str(names[best])!r} held out"
    n_val = max(1, round(fraction * len(train_rows)))
    perm = rng.permutation(len(train_rows))
    return (
        np.sort(train_rows[perm[n_val:]]),
        np.sort(train_rows[perm[:n_val]]),
        f"random {fraction:.0%} of the rows held out",
    )
