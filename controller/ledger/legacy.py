"""Records written before the trial contract had its `objective` series, read as if they had it: the seed's results
and the stores of the CIFAR trainer before it ran on the trial library both carry the per-epoch validation fine
accuracy under the seed's name instead. The one place that name is known outside the trainer and the importer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

V1_CIFAR_OBJECTIVE = "val_fine_outputs_acc"


def objective_series(history: Mapping[str, Any]) -> Any:
    """The history's `objective` series, or in an older record the CIFAR trainer's series that played its part."""
    return history.get("objective") or history.get(V1_CIFAR_OBJECTIVE)
