"""A proxy FID for the 8×8 digits: Fréchet distance in the hidden layer of a small digits classifier.

The Inception network of the real FID does not exist for 8×8 images (and nothing may be downloaded),
so the feature map is the ReLU hidden layer of a one-hidden-layer classifier trained on the real
training images only. Shared by the generative digits experiments (AE-OT, the sliced-Wasserstein flow).
"""

from __future__ import annotations

from typing import Any

import numpy as np

import dpflows


class DigitsFeatures:
    """Fit on (images, labels); ``features(x)`` gives the hidden activations, ``fid(x, y)`` the proxy FID."""

    def __init__(self, images: Any, labels: Any, *, hidden: int = 64, seed: int = 0):
        """Train scikit-learn's MLPClassifier (one ReLU layer of ``hidden`` units) on the given images."""
        from sklearn.neural_network import MLPClassifier

        self.clf = MLPClassifier(hidden_layer_sizes=(hidden,), max_iter=600, random_state=seed)
        self.clf.fit(np.asarray(images, np.float64), np.asarray(labels))

    def features(self, x: Any) -> np.ndarray:
        """ReLU(x W₁ + b₁), the classifier's hidden layer."""
        x = np.asarray(x, np.float64)
        return np.maximum(x @ self.clf.coefs_[0] + self.clf.intercepts_[0], 0.0)

    def fid(self, x: Any, y: Any) -> float:
        """Fréchet distance between the Gaussian fits of the features of x and y."""
        return dpflows.metrics.frechet_distance(self.features(x), self.features(y))

    def accuracy(self, x: Any, labels: Any) -> float:
        """The classifier's accuracy on (x, labels)."""
        return float(self.clf.score(np.asarray(x, np.float64), np.asarray(labels)))
