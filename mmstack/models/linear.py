"""Ridge regression on the sparse text matrix (TF-IDF): the classic "ridge on text" OOF feature of Avito."""
from __future__ import annotations

import numpy as np
from sklearn.linear_model import Ridge

from .base import Level1Model
from .registry import register


@register
class RidgeModel(Level1Model):
    """Ridge on the sparse blocks (CSR), no early stopping; the solver's random state is the seed."""

    key = "ridge"
    version = "1"
    input_kind = "sparse"
    default_params = {"alpha": 3.0, "solver": "auto", "max_iter": 1000}

    def fit_fold(self, X_train, y_train, X_valid, y_valid, categorical):
        model = Ridge(alpha=self.params["alpha"], solver=self.params["solver"], max_iter=self.params["max_iter"],
                      random_state=self.seed)
        return model.fit(X_train, y_train)

    def predict(self, fitted, X) -> np.ndarray:
        return fitted.predict(X)
