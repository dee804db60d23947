"""A learning agent: softmax preferences over styles trained by policy gradient.

Advantages are normalised within each round's group of rollouts (as GRPO does in the verl
trainer Agent Lightning drives), so the step size does not depend on the reward scale.
"""

from __future__ import annotations

import numpy as np


class SoftmaxPolicy:
    def __init__(self, n_actions: int, *, lr: float = 0.6, available: np.ndarray | None = None
                 ) -> None:
        self.h = np.zeros(n_actions)
        self.lr = lr
        self.available = (np.ones(n_actions, dtype=bool) if available is None
                          else available.astype(bool).copy())

    def probs(self) -> np.ndarray:
        z = np.where(self.available, self.h, -np.inf)
        z = z - z[self.available].max()
        e = np.exp(z)
        return e / e.sum()

    def sample(self, rng: np.random.Generator, k: int) -> np.ndarray:
        return rng.choice(len(self.h), size=k, p=self.probs())

    def make_available(self, mask: np.ndarray) -> None:
        """New actions start at the best current preference, so the agent tries them."""
        new = mask & ~self.available
        if new.any():
            self.h[new] = self.h[self.available].max()
            self.available |= mask

    def update(self, counts: np.ndarray, rewards: np.ndarray) -> None:
        """One step from a round: counts[i, a] = times rollout i chose a, rewards[i] its return."""
        if len(rewards) == 0:
            return
        sd = rewards.std()
        adv = (rewards - rewards.mean()) / (sd if sd > 1e-9 else 1.0)
        p = self.probs()
        steps = counts.sum(axis=1, keepdims=True)
        grad = (adv[:, None] * (counts - steps * p)).sum(axis=0) / len(rewards)
        self.h += self.lr * np.where(self.available, grad, 0.0)
