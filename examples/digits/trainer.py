"""A second trial program, not Keras: a small neural network (scikit-learn's MLPClassifier) on the handwritten digits
that ship inside scikit-learn, one epoch per `partial_fit`, its validation accuracy reported after each epoch through
the trial library, so that early stopping can cut it like the CIFAR trainer. The whole trial side is the library's
(controller/trial.py; docs/TRIAL_CONTRACT.md):

    python examples/digits/trainer.py --trial URI [--epochs N]      # as the controller runs it

Its model is saved as arrays: model.npz (the config's trial.modelFile), a NumPy .npz of the weights, never a
pickle. Parameters (examples/digits/space.yaml): hidden (units), alpha (L2), lr (initial learning rate), batch.
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # a checkout, or /app in the example's image

from controller import trial

CHECKS = {"hidden": (4, 512), "alpha": (1e-7, 1.0), "lr": (1e-5, 1.0), "batch": (8, 512)}


def bad_params(params: dict) -> str | None:
    """The first parameter this program cannot train with, named; None if all are usable."""
    for name, (low, high) in CHECKS.items():
        value = params.get(name)
        if not isinstance(value, int | float) or isinstance(value, bool) or not low <= value <= high:
            return f"params.{name}: {value!r} is not a number in [{low}, {high}]"
    return None


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=20)
    args, _ = ap.parse_known_args()  # --trial is the library's; --data is the CIFAR trainer's, not needed here
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")  # the library's lines
    t = trial.start()
    problem = bad_params(t.params)
    if problem:
        return t.fail(problem)  # exit 3: the same point fails again, so it is not retried
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier

    p = t.params
    x, y = load_digits(return_X_y=True)
    x_train, x_val, y_train, y_val = train_test_split(x / 16.0, y, test_size=0.25, random_state=0, stratify=y)
    model = MLPClassifier(hidden_layer_sizes=(int(p["hidden"]),), alpha=float(p["alpha"]),
                          learning_rate_init=float(p["lr"]), batch_size=int(p["batch"]), random_state=t.seed)
    classes = np.unique(y)
    rng = np.random.default_rng(t.seed)
    started = time.monotonic()
    best: tuple[float, int, bytes] | None = None  # the best epoch's score, number and weights: what finish() reports
    first = 1
    restored = t.restore()  # attempt 2 on (preempted, killed): go on after the last checkpoint as if never stopped
    if restored is not None:
        best = _resume(model, rng, restored.state, x_train, y_train, classes)
        first = restored.step + 1
    for epoch in range(first, args.epochs + 1):
        order = rng.permutation(len(x_train))
        for i in range(0, len(order), int(p["batch"])):
            batch = order[i:i + int(p["batch"])]
            model.partial_fit(x_train[batch], y_train[batch], classes=classes)
        score = float(model.score(x_val, y_val))
        t.report(epoch, objective=score, loss=float(model.loss_))
        if best is None or score > best[0]:
            weights = io.BytesIO()
            np.savez(weights, epoch=epoch, **{f"coef_{i}": c for i, c in enumerate(model.coefs_)},
                     **{f"intercept_{i}": b for i, b in enumerate(model.intercepts_)})
            best = (score, epoch, weights.getvalue())
        t.checkpoint(epoch, _state(model, rng, best))  # every epoch: a kill costs at most this one
        if t.should_stop():
            break
    if best is not None:
        t.save_model(best[2])  # the best epoch's weights: the model matches the objective finish() reports
    return t.finish(objective_name="validation accuracy (best epoch)", best_epoch=best[1] if best else None,
                    train_seconds=round(time.monotonic() - started, 3))


def _state(model, rng, best) -> bytes:
    """Everything the next epoch depends on, as arrays (never a pickle): weights, Adam's moments and step count, the
    sample counter, the shuffling RNG's state, and the best epoch so far with its weights."""
    import json

    import numpy as np

    opt = model._optimizer
    meta = {"adam_t": opt.t, "t_": model.t_, "n_iter_": model.n_iter_, "rng": rng.bit_generator.state,
            "best": [best[0], best[1]] if best else None}
    arrays = {**{f"coef_{i}": c for i, c in enumerate(model.coefs_)},
              **{f"intercept_{i}": b for i, b in enumerate(model.intercepts_)},
              **{f"m_{i}": m for i, m in enumerate(opt.ms)}, **{f"v_{i}": v for i, v in enumerate(opt.vs)}}
    out = io.BytesIO()
    np.savez(out, meta=np.array(json.dumps(meta)), best_weights=np.frombuffer(best[2] if best else b"", np.uint8),
             **arrays)
    return out.getvalue()


def _resume(model, rng, state: bytes, x, y, classes) -> tuple[float, int, bytes] | None:
    """The model, optimizer and RNG as _state saved them; returns the best epoch so far."""
    import json

    import numpy as np

    z = np.load(io.BytesIO(state), allow_pickle=False)
    meta = json.loads(str(z["meta"]))
    model.partial_fit(x[:len(classes) * 4], y[:len(classes) * 4], classes=classes)  # builds layers and optimizer
    n = len(model.coefs_)
    model.coefs_ = [z[f"coef_{i}"].copy() for i in range(n)]
    model.intercepts_ = [z[f"intercept_{i}"].copy() for i in range(n)]
    model._optimizer.ms = [z[f"m_{i}"].copy() for i in range(2 * n)]
    model._optimizer.vs = [z[f"v_{i}"].copy() for i in range(2 * n)]
    model._optimizer.t, model.t_, model.n_iter_ = meta["adam_t"], meta["t_"], meta["n_iter_"]
    rng.bit_generator.state = meta["rng"]
    return (meta["best"][0], meta["best"][1], z["best_weights"].tobytes()) if meta["best"] else None


if __name__ == "__main__":
    sys.exit(main())
