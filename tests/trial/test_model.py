"""Every point of the seed space builds and trains a step; bad points fail naming the parameter."""

import itertools
import json

import numpy as np
import pytest
from support.paths import ROOT, SEED_RESULTS

from trainer.model import ParamError, build_model, check_params

pytestmark = pytest.mark.e2e

BEST = json.loads(sorted(SEED_RESULTS.glob("*.json"))[-1].read_text())["space"]


def _coverage_points():
    """All pooling types × both block counts × residual on/off, cycling the other choices through
    their extremes (kernel sizes 2 and 4, multipliers at both ends of the space, BN, first conv)."""
    lo, hi = np.exp(-0.6), np.exp(0.6)
    points = []
    for i, (pool, blocks, residual) in enumerate(itertools.product(
            ("max", "avg", "all_conv", "inception"), (2, 3), (None, 1.0, 4.0))):
        ext = i % 2 == 0
        points.append({**BEST, "pooling_type": pool, "nb_conv_pool_layers": blocks, "residual": residual,
                       "conv_pool_res_start_idx": float(i % 3), "conv_kernel_size": 2.0 if ext else 4.0,
                       "res_conv_kernel_size": 4.0 if ext else 2.0, "conv_hiddn_units_mult": lo if ext else hi,
                       "fc_units_1_mult": hi if ext else lo, "one_more_fc": None if i % 3 == 0 else lo,
                       "first_conv": (None, 3, 4)[i % 3], "use_BN": bool(i % 2), "activation": ("relu", "elu")[i % 2],
                       "optimizer": ("Adam", "Nadam", "RMSprop")[i % 3], "batch_size": 100.0 if ext else 450.0,
                       "lr_rate_mult": np.exp(0.5) if ext else np.exp(-0.5), "conv_dropout_drop_proba": 0.35 * ext,
                       "fc_dropout_drop_proba": 0.6 * ext})
    return points


def test_every_kind_of_point_builds_and_trains_one_step():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
    y = {"fine_outputs": rng.integers(0, 100, 4), "coarse_outputs": rng.integers(0, 20, 4)}
    points = _coverage_points()
    assert len(points) == 24
    for p in points:
        model = build_model(p, jit_compile=False, width_scale=0.1)
        model.run_eagerly = True  # one step: tracing a graph would cost more than the step itself
        logs = model.train_on_batch(x, y, return_dict=True)
        assert np.isfinite(logs["loss"]), p


def test_full_width_extremes_build_with_the_expected_heads():
    big = {**BEST, "conv_hiddn_units_mult": float(np.exp(0.6)), "fc_units_1_mult": float(np.exp(0.6)),
           "one_more_fc": float(np.exp(0.6)), "pooling_type": "inception", "residual": 4.0}
    model = build_model(big, jit_compile=False)
    out = model(np.zeros((1, 32, 32, 3), np.uint8), training=False)
    assert {k: tuple(v.shape) for k, v in out.items()} == {"fine_outputs": (1, 100), "coarse_outputs": (1, 20)}
    np.testing.assert_allclose(out["fine_outputs"].numpy().sum(), 1.0, rtol=1e-4)  # softmax, not sigmoid
    assert model.count_params() > 1_000_000


def test_flip_is_active_in_training_only():
    from keras import layers

    model = build_model(BEST, jit_compile=False, width_scale=0.1)
    (flip,) = [layer for layer in model.layers if isinstance(layer, layers.RandomFlip)]
    x = np.random.default_rng(1).random((64, 32, 32, 3)).astype("float32")
    np.testing.assert_array_equal(flip(x, training=False).numpy(), x)
    trained = flip(x, training=True).numpy()
    flipped = [np.array_equal(t, xi[:, ::-1]) for t, xi in zip(trained, x)]
    kept = [np.array_equal(t, xi) for t, xi in zip(trained, x)]
    assert all(f or k for f, k in zip(flipped, kept)) and 0 < sum(flipped) < 64


@pytest.mark.parametrize("change, message", [
    ({"bogus": 1}, r"unknown parameter\(s\) \['bogus'\]"),
    ({"pooling_type": "fractional"}, r"params\.pooling_type: 'fractional' is not one of"),
    ({"batch_size": 0}, r"params\.batch_size: 0 is outside"),
    ({"conv_kernel_size": 2.5}, r"params\.conv_kernel_size: 2\.5 must be a whole number"),
    ({"lr_rate_mult": "fast"}, r"params\.lr_rate_mult: expected a number, got 'fast'"),
    ({"use_BN": 1}, r"params\.use_BN: 1 is not one of \[False, True\]"),
    ({"residual": float("nan")}, r"params\.residual: expected a number or null"),
])
def test_bad_points_name_the_parameter(change, message):
    with pytest.raises(ParamError, match=message):
        check_params({**BEST, **change})


def test_missing_parameters_are_named():
    params = dict(BEST)
    del params["activation"]
    with pytest.raises(ParamError, match=r"missing parameter\(s\) \['activation'\]"):
        check_params(params)


def test_the_model_of_each_of_the_42_original_points_has_the_originals_parameter_count():
    """tests/data/seed-architecture.json: the original code's build_model, built under Keras 3 with only renamed
    APIs, for each original result's point. Ours must give the same trainable parameter count for all 42."""
    expected = json.loads((ROOT / "tests" / "data" / "seed-architecture.json").read_text())["results"]
    assert len(expected) == 42
    got = {}
    for entry in expected:
        point = json.loads((SEED_RESULTS / entry["result"]).read_text())["space"]
        model = build_model(point, jit_compile=False)
        got[entry["result"]] = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    wrong = {r: (got[r], e["seed_trainable_params"]) for e in expected
             if got[(r := e["result"])] != e["seed_trainable_params"]}
    assert wrong == {}, f"{len(wrong)} of 42 differ (ours, original): {wrong}"


def _keras2_steps(name, grads, lr, steps):
    """Keras 2.0.6's update rules (its optimizers.py), in numpy: the reference for our subclasses."""
    p, m, v, m_schedule = 1.0, 0.0, 0.0, 1.0
    out = []
    for t in range(1, steps + 1):
        g = grads[t - 1]
        if name == "RMSprop":
            v = 0.9 * v + 0.1 * g * g
            p -= lr * g / (np.sqrt(v) + 1e-8)
        elif name == "Nadam":
            cache_t = 0.9 * (1 - 0.5 * 0.96 ** (t * 0.004))
            cache_t1 = 0.9 * (1 - 0.5 * 0.96 ** ((t + 1) * 0.004))
            m_schedule_new = m_schedule * cache_t
            m_schedule_next = m_schedule_new * cache_t1
            m_schedule = m_schedule_new
            m = 0.9 * m + 0.1 * g
            v = 0.999 * v + 0.001 * g * g
            m_bar = (1 - cache_t) * g / (1 - m_schedule_new) + cache_t1 * m / (1 - m_schedule_next)
            p -= lr * m_bar / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
        out.append(p)
    return out


@pytest.mark.parametrize("name", ["RMSprop", "Nadam"])
def test_the_optimizers_step_as_keras_2_0_6_did(name):
    import keras

    from trainer.optimizers import seed_optimizer

    grads = [0.5, -0.2, 0.1, 0.05, -0.3]
    var = keras.Variable(1.0, dtype="float64")
    opt = seed_optimizer(name, 0.01)
    ours = []
    for g in grads:
        opt.apply_gradients([(keras.ops.convert_to_tensor(g, dtype="float64"), var)])
        ours.append(float(var.numpy()))
    np.testing.assert_allclose(ours, _keras2_steps(name, grads, 0.01, len(grads)), rtol=1e-9)
    assert opt.epsilon == 1e-8


@pytest.mark.parametrize("name", ["RMSprop", "Nadam"])
def test_the_gpu_path_trains_mixed_float16_under_xla_with_each_keras_2_optimizer(name):
    """What a GPU trial runs — mixed_float16 with loss scaling, XLA (jit_compile), the Keras-2 optimizer subclasses —
    forced on the CPU, where TensorFlow can do all three (slowly). What a CPU cannot show: cuDNN kernels, float16
    arithmetic on tensor cores, and the memory of a real batch on a real device."""
    import keras

    from trainer.model import build_model

    point = {**BEST, "optimizer": name, "use_BN": True, "batch_size": 100.0}
    rng = np.random.default_rng(1)
    x = rng.integers(0, 255, (64, 32, 32, 3), dtype=np.uint8)
    y = {"fine_outputs": rng.integers(0, 100, 64), "coarse_outputs": rng.integers(0, 20, 64)}
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_model(point, jit_compile=True, width_scale=0.1)
        history = model.fit(x, y, batch_size=32, epochs=2, verbose=0)
        assert model.jit_compile is True and model.optimizer.__class__.__name__ == "LossScaleOptimizer"
        assert type(model.optimizer.inner_optimizer).__name__ == f"Keras2{name}"  # ours, wrapped for loss scaling
        assert model.get_layer("fine_outputs").compute_dtype == "float32"  # softmax outputs stay float32
        assert any(layer.compute_dtype == "float16" for layer in model.layers)
        losses = history.history["loss"]
        assert len(losses) == 2 and all(np.isfinite(losses))
        assert all(w.dtype == "float32" for w in model.trainable_weights)  # master weights
    finally:
        keras.mixed_precision.set_global_policy("float32")
