"""The original project's two-headed CNN, for every point of its space: build_model(params) is pure.

The architecture is the original's layer for layer, its quirks included (extra batch-norms after the residual
units; linear stride-2 convolutions with batch-norm in the inception reduction), so that trainable parameter
counts equal the original's for all 42 of its points (tests/test_model.py). Deliberate deviations, each with
its reason, are listed in the README ("Deliberate deviations from the original"): softmax heads, the random
flip active in training only, sparse labels, mixed precision and XLA on a GPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from controller.errors import PermanentError

BASE_LR = 0.001
BASE_L2 = 0.0007
OPTIMIZERS = ("Adam", "Nadam", "RMSprop")
POOLING = ("max", "avg", "all_conv", "inception")
ACTIVATIONS = ("relu", "elu")


class ParamError(PermanentError):
    """The point cannot be built: unknown, missing or out-of-range parameters (named in the message)."""


@dataclass(frozen=True)
class Arch:
    """params, checked and typed."""

    lr_rate_mult: float
    l2_weight_reg_mult: float
    batch_size: int
    optimizer: str
    coarse_labels_weight: float
    conv_dropout_drop_proba: float
    fc_dropout_drop_proba: float
    use_BN: bool
    first_conv: int | None
    residual: int | None
    conv_hiddn_units_mult: float
    nb_conv_pool_layers: int
    conv_pool_res_start_idx: int
    pooling_type: str
    conv_kernel_size: int
    res_conv_kernel_size: int
    fc_units_1_mult: float
    one_more_fc: float | None
    activation: str


def _num(params: Mapping[str, Any], key: str, low: float, high: float, integer: bool = False,
         optional: bool = False) -> Any:
    v = params[key]
    if v is None and optional:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ParamError(f"params.{key}: expected a number{' or null' if optional else ''}, got {v!r}")
    if not low <= v <= high:
        raise ParamError(f"params.{key}: {v} is outside the model's range [{low}, {high}]")
    if integer:
        if abs(v - round(v)) > 1e-6:
            raise ParamError(f"params.{key}: {v} must be a whole number")
        return int(round(v))
    return float(v)


def _one_of(params: Mapping[str, Any], key: str, options: tuple) -> Any:
    v = params[key]
    if v not in options or isinstance(v, bool) != isinstance(options[0], bool):
        raise ParamError(f"params.{key}: {v!r} is not one of {list(options)}")
    return v


def check_params(params: Mapping[str, Any]) -> Arch:
    """Validate a decoded point; every problem names the parameter."""
    if not isinstance(params, Mapping):
        raise ParamError(f"params: expected a mapping, got {type(params).__name__}")
    known = set(Arch.__dataclass_fields__)
    unknown = sorted(set(params) - known)
    if unknown:
        raise ParamError(f"params: unknown parameter(s) {unknown}; the model knows {sorted(known)}")
    missing = sorted(known - set(params))
    if missing:
        raise ParamError(f"params: missing parameter(s) {missing}")
    return Arch(
        lr_rate_mult=_num(params, "lr_rate_mult", 1e-4, 100.0),
        l2_weight_reg_mult=_num(params, "l2_weight_reg_mult", 0.0, 100.0),
        batch_size=_num(params, "batch_size", 1, 65536, integer=True),
        optimizer=_one_of(params, "optimizer", OPTIMIZERS),
        coarse_labels_weight=_num(params, "coarse_labels_weight", 0.0, 10.0),
        conv_dropout_drop_proba=_num(params, "conv_dropout_drop_proba", 0.0, 0.95),
        fc_dropout_drop_proba=_num(params, "fc_dropout_drop_proba", 0.0, 0.95),
        use_BN=_one_of(params, "use_BN", (False, True)),
        first_conv=_num(params, "first_conv", 1, 7, integer=True, optional=True),
        residual=_num(params, "residual", 1, 8, integer=True, optional=True),
        conv_hiddn_units_mult=_num(params, "conv_hiddn_units_mult", 0.05, 10.0),
        nb_conv_pool_layers=_num(params, "nb_conv_pool_layers", 1, 4, integer=True),
        conv_pool_res_start_idx=_num(params, "conv_pool_res_start_idx", 0, 4, integer=True),
        pooling_type=_one_of(params, "pooling_type", POOLING),
        conv_kernel_size=_num(params, "conv_kernel_size", 1, 7, integer=True),
        res_conv_kernel_size=_num(params, "res_conv_kernel_size", 1, 7, integer=True),
        fc_units_1_mult=_num(params, "fc_units_1_mult", 0.01, 10.0),
        one_more_fc=_num(params, "one_more_fc", 0.01, 10.0, optional=True),
        activation=_one_of(params, "activation", ACTIVATIONS),
    )


def build_model(params: Mapping[str, Any], *, n_fine: int = 100, n_coarse: int = 20, jit_compile: bool | str = "auto",
                width_scale: float = 1.0, input_dtype: str = "uint8") -> Any:
    """The compiled Keras model for one point. width_scale shrinks every layer (tests use tiny models);
    input_dtype float32 takes the seed's float arrays (benchmark P6b compares the two)."""
    import keras
    from keras import layers, regularizers

    a = check_params(params)
    reg = regularizers.L2(BASE_L2 * a.l2_weight_reg_mult)
    act = a.activation

    def conv(x, n, k, strides=1, activation=act):
        return layers.Conv2D(max(1, int(n * width_scale)), k, strides=strides, padding="same", activation=activation,
                             kernel_regularizer=reg)(x)

    def bn(x):
        return layers.BatchNormalization()(x) if a.use_BN else x

    def conv_pool(x, n):
        # The original's convolution_pooling: a linear stride-2 convolution, then batch-norm if use_BN.
        return bn(conv(x, n, 3, strides=2, activation=None))

    inputs = keras.Input((32, 32, 3), dtype=input_dtype, name="image")
    x = layers.Rescaling(1 / 255.0, offset=-0.5)(inputs)
    x = layers.RandomFlip("horizontal")(x)  # active in training only
    if a.first_conv is not None:
        x = conv(x, 16, a.first_conv)
    n = int(40 * a.conv_hiddn_units_mult)
    for block in range(a.nb_conv_pool_layers):
        x = bn(conv(x, n, a.conv_kernel_size))
        if a.residual and block >= a.conv_pool_res_start_idx:
            for _ in range(a.residual):
                shortcut = conv(x, n, 1, activation=None)
                branch = conv(layers.Dropout(a.conv_dropout_drop_proba)(x), n, a.res_conv_kernel_size)
                x = bn(layers.Add()([shortcut, branch]))
            # The original's residual() ends with one more batch-norm with use_BN and two without: part of its
            # architecture (it changes parameter counts), kept.
            x = layers.BatchNormalization()(x)
            if not a.use_BN:
                x = layers.BatchNormalization()(x)
        if a.pooling_type == "max":
            x = layers.MaxPooling2D(2)(x)
        elif a.pooling_type == "avg":
            x = layers.AveragePooling2D(2)(x)
        elif a.pooling_type == "all_conv":
            x = conv_pool(x, n)
        else:
            wide, narrow = int(0.4 * n) + 1, int(0.33 * n) + 1
            b1 = conv_pool(x, wide)
            b2 = conv_pool(conv(conv(x, narrow, 1), wide, 3), wide)
            b3 = layers.MaxPooling2D(3, strides=2, padding="same")(conv(x, wide, 1))
            x = layers.Concatenate()([b1, b2, b3])
        x = layers.Dropout(a.conv_dropout_drop_proba)(x)
        n *= 2
    x = layers.Flatten()(x)
    x = layers.Dense(max(1, int(1000 * a.fc_units_1_mult * width_scale)), activation=act, kernel_regularizer=reg)(x)
    x = layers.Dropout(a.fc_dropout_drop_proba)(x)
    if a.one_more_fc is not None:
        x = layers.Dense(max(1, int(750 * a.one_more_fc * width_scale)), activation=act, kernel_regularizer=reg)(x)
        x = layers.Dropout(a.fc_dropout_drop_proba)(x)
    # float32 heads: softmax and the loss stay exact under mixed precision.
    fine = layers.Dense(n_fine, activation="softmax", kernel_regularizer=reg, dtype="float32", name="fine_outputs")(x)
    coarse = layers.Dense(n_coarse, activation="softmax", kernel_regularizer=reg, dtype="float32",
                          name="coarse_outputs")(x)
    model = keras.Model(inputs, {"fine_outputs": fine, "coarse_outputs": coarse}, name="cifar100_two_heads")
    from trainer.optimizers import seed_optimizer

    model.compile(
        optimizer=seed_optimizer(a.optimizer, BASE_LR * a.lr_rate_mult),
        loss={"fine_outputs": "sparse_categorical_crossentropy", "coarse_outputs": "sparse_categorical_crossentropy"},
        loss_weights={"fine_outputs": 1.0, "coarse_outputs": a.coarse_labels_weight},
        metrics={"fine_outputs": ["accuracy"], "coarse_outputs": ["accuracy"]},
        jit_compile=jit_compile,
    )
    return model
