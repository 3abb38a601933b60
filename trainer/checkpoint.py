"""The CIFAR trainer's state after an epoch, as one checkpoint (the trial contract's version 2): the model's weights,
the optimizer's variables (its step count and moments), the per-epoch history, the best epoch so far with its
weights, and the patience count: everything the next epoch depends on but tf.data's shuffle order, which starts
again (a resumed trial sees each epoch's images in another order than an uninterrupted one would). Arrays in an
.npz, never a pickle."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np


def dump(model: Any, watch: Any, epoch: int) -> bytes:
    """The state after `epoch` epochs (1-based)."""
    meta = {"epoch": epoch, "history": watch.history, "best_epoch": watch.best_epoch, "best_val": watch.best_val,
            "since_best": watch.since_best, "n_weights": len(model.get_weights()),
            "n_optimizer": len(model.optimizer.variables), "n_best": len(watch.best_weights or [])}
    arrays = {f"w{i}": w for i, w in enumerate(model.get_weights())}
    arrays.update({f"o{i}": np.asarray(v) for i, v in enumerate(model.optimizer.variables)})
    arrays.update({f"b{i}": w for i, w in enumerate(watch.best_weights or [])})
    out = io.BytesIO()
    np.savez(out, meta=np.array(json.dumps(meta)), **arrays)
    return out.getvalue()


def load(model: Any, watch: Any, state: bytes) -> int:
    """The model, its optimizer and the watch as dump() saved them; returns the epochs done. A state that does not
    fit this model (another point, another width) raises ValueError."""
    z = np.load(io.BytesIO(state), allow_pickle=False)
    meta = json.loads(str(z["meta"]))
    weights = [z[f"w{i}"] for i in range(meta["n_weights"])]
    model.set_weights(weights)  # raises ValueError for another model's shapes
    model.optimizer.build(model.trainable_variables)
    variables = model.optimizer.variables
    if len(variables) != meta["n_optimizer"]:
        raise ValueError(f"the checkpoint holds {meta['n_optimizer']} optimizer variables, this model {len(variables)}")
    for i, v in enumerate(variables):
        v.assign(z[f"o{i}"])
    watch.history = {k: list(v) for k, v in meta["history"].items()}
    watch.best_epoch, watch.best_val, watch.since_best = meta["best_epoch"], meta["best_val"], meta["since_best"]
    watch.best_weights = [z[f"b{i}"] for i in range(meta["n_best"])] or None
    return int(meta["epoch"])
