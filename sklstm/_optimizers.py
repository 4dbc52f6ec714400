"""Optimizers that update one flat parameter buffer in place.

They follow the update rules of scikit-learn's ``MLPRegressor`` (whose
``SGDOptimizer``/``AdamOptimizer`` work on lists of arrays); here every
parameter and gradient is one contiguous array, so each update is a handful
of vectorised operations over the whole model.
"""

import numpy as np


class SGD:
    """Stochastic gradient descent with (Nesterov) momentum.

    ``velocity = momentum * velocity - learning_rate * grad``, then
    ``params += velocity`` or, with Nesterov's momentum,
    ``params += momentum * velocity - learning_rate * grad``.
    """

    def __init__(self, n_params, dtype, learning_rate, momentum=0.9, nesterov=True):
        self.learning_rate = learning_rate
        self.momentum = momentum
        self.nesterov = nesterov
        self.velocity = np.zeros(n_params, dtype=dtype)

    def update(self, params, grad):
        self.velocity *= self.momentum
        self.velocity -= self.learning_rate * grad
        if self.nesterov:
            params += self.momentum * self.velocity - self.learning_rate * grad
        else:
            params += self.velocity

    def state(self):
        return {"velocity": self.velocity}

    def load_state(self, state):
        self.velocity[...] = state["velocity"]


class Adam:
    """Adam (Kingma and Ba, 2014) with bias correction folded into the step."""

    def __init__(self, n_params, dtype, learning_rate, beta_1=0.9, beta_2=0.999,
                 epsilon=1e-8):
        self.learning_rate = learning_rate
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_steps = 0
        self.m = np.zeros(n_params, dtype=dtype)
        self.v = np.zeros(n_params, dtype=dtype)

    def update(self, params, grad):
        self.n_steps += 1
        self.m *= self.beta_1
        self.m += (1 - self.beta_1) * grad
        self.v *= self.beta_2
        self.v += (1 - self.beta_2) * grad * grad
        step_size = (
            self.learning_rate
            * np.sqrt(1 - self.beta_2**self.n_steps)
            / (1 - self.beta_1**self.n_steps)
        )
        params -= step_size * self.m / (np.sqrt(self.v) + self.epsilon)

    def state(self):
        return {"m": self.m, "v": self.v, "n_steps": self.n_steps}

    def load_state(self, state):
        self.m[...] = state["m"]
        self.v[...] = state["v"]
        self.n_steps = state["n_steps"]


def clip_by_global_norm(grad, clip_norm):
    """Scale ``grad`` in place so its L2 norm is at most ``clip_norm``."""
    norm = float(np.linalg.norm(grad))
    if clip_norm is not None and norm > clip_norm:
        grad *= clip_norm / norm
    return norm
