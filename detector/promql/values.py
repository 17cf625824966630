"""The values PromQL expressions produce: instant vectors and scalars."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from detector.labels import Labels


@dataclass(frozen=True, slots=True)
class Scalar:
    value: float


@dataclass(frozen=True, slots=True)
class InstantVector:
    """Samples at one time: a label set per sample and a column of values."""

    labels: list[Labels]
    values: np.ndarray

    @classmethod
    def empty(cls) -> InstantVector:
        return cls([], np.zeros(0))

    def __len__(self) -> int:
        return len(self.labels)

    def samples(self) -> Iterator[tuple[Labels, float]]:
        return zip(self.labels, self.values.tolist())

    def select(self, mask: np.ndarray) -> InstantVector:
        idx = np.flatnonzero(mask)
        return InstantVector([self.labels[i] for i in idx], self.values[idx])


Value = InstantVector | Scalar
