"""The optimizers of the original project, as Keras 2.0.6 computed them, on Keras 3.

Settings alone match Adam (epsilon 1e-8 instead of Keras 3's 1e-7). Two updates differ in form and take a
subclass each: Keras 2.0.6's RMSprop added epsilon outside the square root (Keras 3: inside), and its Nadam
warmed its momentum with 0.96^(0.004·t) (Keras 3: 0.96^t, which reaches the full beta_1 within ~100 steps
instead of ~25,000). 24 of the original 42 trials used Nadam, so this changes what a search learns.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

EPSILON = 1e-8
NADAM_SCHEDULE_DECAY = 0.004  # Keras 2.0.6's Nadam(schedule_decay=0.004)


# Registered: a saved model.keras names these classes, and keras.models.load_model finds them once this module
# is imported (or load with compile=False, which needs no optimizer).
@keras.saving.register_keras_serializable(package="cifar_hpo")
class Keras2RMSprop(keras.optimizers.RMSprop):  # type: ignore[misc]  # keras is untyped
    """p -= lr · g / (sqrt(v) + epsilon), v = rho·v + (1 - rho)·g² (Keras 2.0.6; no momentum, not centred)."""

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        lr = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        velocity = self._velocities[self._get_variable_index(variable)]
        self.assign(velocity, ops.add(ops.multiply(self.rho, velocity),
                                      ops.multiply(1 - self.rho, ops.square(gradient))))
        self.assign_sub(variable, ops.divide(ops.multiply(lr, gradient), ops.add(ops.sqrt(velocity), self.epsilon)))


@keras.saving.register_keras_serializable(package="cifar_hpo")
class Keras2Nadam(keras.optimizers.Nadam):  # type: ignore[misc]  # keras is untyped
    """Keras 3's Nadam with Keras 2.0.6's momentum schedule: u_t = beta_1 · (1 - 0.5 · 0.96^(0.004·t))."""

    def _momentum_cache(self, step: Any, dtype: Any) -> Any:
        return ops.cast(self.beta_1, dtype) * (1.0 - 0.5 * ops.power(ops.cast(0.96, dtype),
                                                                     step * NADAM_SCHEDULE_DECAY))

    def _backend_update_step(self, grads: Any, trainable_variables: Any, learning_rate: Any) -> None:
        dtype = self._u_product.dtype
        self.assign(self._u_product,
                    self._u_product * self._momentum_cache(ops.cast(self.iterations + 1, dtype), dtype))
        # Nadam's own version would advance the product with Keras 3's schedule: skip it, keep the base's.
        super(keras.optimizers.Nadam, self)._backend_update_step(grads, trainable_variables, learning_rate)

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        gradient = ops.cast(gradient, dtype)
        step = ops.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = ops.cast(self.beta_1, dtype), ops.cast(self.beta_2, dtype)
        u_t = self._momentum_cache(step, dtype)
        u_t_1 = self._momentum_cache(step + 1, dtype)
        u_product_t = ops.cast(self._u_product, dtype)  # already includes u_t (updated above)
        u_product_t_1 = u_product_t * u_t_1
        m = self._momentums[self._get_variable_index(variable)]
        v = self._velocities[self._get_variable_index(variable)]
        self.assign_add(m, ops.multiply(ops.subtract(gradient, m), 1 - beta_1))
        self.assign_add(v, ops.multiply(ops.subtract(ops.square(gradient), v), 1 - beta_2))
        m_hat = ops.add(ops.divide(ops.multiply(u_t_1, m), 1 - u_product_t_1),
                        ops.divide(ops.multiply(1 - u_t, gradient), 1 - u_product_t))
        v_hat = ops.divide(v, 1 - ops.power(beta_2, step))
        self.assign_sub(variable, ops.divide(ops.multiply(m_hat, lr), ops.add(ops.sqrt(v_hat), self.epsilon)))


def seed_optimizer(name: str, learning_rate: float) -> keras.optimizers.Optimizer:
    """The original project's optimizer `name` (Adam, Nadam or RMSprop) as Keras 2.0.6 ran it."""
    kind = {"Adam": keras.optimizers.Adam, "Nadam": Keras2Nadam, "RMSprop": Keras2RMSprop}[name]
    return kind(learning_rate=learning_rate, epsilon=EPSILON)
