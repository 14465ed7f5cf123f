"""The convergence benchmark's data and its sample-quality yardstick: 8x8 digits and a classifier trained on them."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

CLASSES = 10


def digits():
    """(train x, train y, held-out x, held-out y): 8x8 digits in [-1, 1], shape (N, 1, 8, 8), fixed split."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 8.0 - 1.0
    y = torch.tensor(data.target)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    train, held = order[:-300], order[-300:]
    return x[train], y[train], x[held], y[held]


def mlp() -> torch.nn.Sequential:
    return torch.nn.Sequential(
        torch.nn.Flatten(),
        torch.nn.Linear(64, 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, 64),
        torch.nn.ReLU(),
        torch.nn.Linear(64, CLASSES),
    )


def classifier(train_x, train_y) -> torch.nn.Sequential:
    """A small MLP trained on the real images; its penultimate layer is the feature space of `fd`."""
    torch.manual_seed(0)
    net = mlp()
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3, weight_decay=1e-4)
    for _ in range(400):
        loss = F.cross_entropy(net(train_x), train_y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return net.eval()


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance of two feature sets, as in FID."""
    import warnings

    from scipy import linalg

    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    with warnings.catch_warnings():  # ReLU features have dead units, so the product can be singular
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        root = linalg.sqrtm(cov_a @ cov_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))
