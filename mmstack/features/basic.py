"""The skeleton's tabular block: log price, category codes, date parts, item_seq_number, text lengths."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .base import BlockContext, BlockOutput, FeatureBlock, category_codes
from .registry import register

CATEGORICALS = ("region", "city", "parent_category_name", "category_name", "param_1", "param_2", "param_3",
                "user_type", "image_top_1")


@register
class BasicBlock(FeatureBlock):
    """Simple per-row features that read nothing but the row itself."""

    name = "basic"
    rows_per_second = 100000  # measured here at the default params (README), for --time-limit
    version = "1"
    default_params = {"categoricals": list(CATEGORICALS)}

    def build(self, ctx: BlockContext) -> BlockOutput:
        rows = ctx.data.all_rows()
        out = pd.DataFrame(index=rows.index)
        price = rows["price"].astype(float)
        out["log_price"] = np.log1p(price)
        out["price_missing"] = price.isna().astype(float)
        for col in self.params["categoricals"]:
            out[col] = category_codes(rows[col])
        dates = pd.to_datetime(rows["activation_date"])
        out["weekday"] = dates.dt.dayofweek
        out["day_of_month"] = dates.dt.day
        out["item_seq_number"] = rows["item_seq_number"].astype(float)
        out["log_item_seq_number"] = np.log1p(out["item_seq_number"])
        for col in ("title", "description"):
            text = rows[col].fillna("")
            out[f"{col}_len"] = text.str.len()
            out[f"{col}_words"] = text.str.count(r"\S+")  # = len(split()), without a list of words per row
        # an image counts only if it is referenced and present in its split's folder or zip
        images = ctx.data.images
        present = [isinstance(i, str) and i in images["test" if t else "train"] for i, t in zip(rows["image"], rows["is_test"])]
        out["has_image"] = np.asarray(present, dtype=float)
        dense = out.astype({c: np.float32 for c in out.columns if c not in self.params["categoricals"]})
        return BlockOutput(dense=dense.reset_index(drop=True), categorical=list(self.params["categoricals"]))
