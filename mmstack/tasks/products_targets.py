"""The products task's targets (FACTS.md section 3): one proxy classification per label column present.

gender and age_group are labels of clothes and shoes only: ``applies_to = "category"`` makes a row without the
label a row to predict only when its category (given, or predicted for rows without one) is one under which the
label occurs in the data. Rows of other categories have no such label: they are neither trained on nor predicted.
"""
from __future__ import annotations

from ..targets import TargetSpec

TARGETS = (
    TargetSpec("category", "classification", "logloss"),
    TargetSpec("sub_category", "classification", "logloss"),
    TargetSpec("price_range", "classification", "logloss"),
    TargetSpec("gender", "classification", "logloss", applies_to="category"),
    TargetSpec("age_group", "classification", "logloss", applies_to="category"),
    TargetSpec("isadult", "classification", "logloss"),
)
