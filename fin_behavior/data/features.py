"""Raw typed rows -> model-ready rows: the model's features, the `HighAmount` target, no identifiers.

The features come from the one feature definition (serving/features.py), the same code `/score`, batch
scoring, the serving image and Azure's score.py derive with. They stay in business form (string categories,
unscaled numbers); encoding and scaling belong to the model pipeline so that serving never re-implements them.
Personal data (names, address, phone, email) and IDs never reach the features, nor do the columns that reveal
the amount (Transaction Amount itself and Account Balance After Transaction).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fin_behavior.data.columns import FEATURES, KEY, TARGET, TRANSACTION_ID
from fin_behavior.serving.features import INPUTS, model_features


def high_amount_threshold(amounts: pd.Series, quantile: float) -> float:
    if not 0 < quantile < 1:
        raise ValueError(f"target_quantile must be between 0 and 1 (exclusive), got {quantile}")
    return float(amounts.quantile(quantile))


def feature_frame(valid: pd.DataFrame) -> pd.DataFrame:
    """The model's features (FEATURES, in order) of rows that passed `RawTransactions`, index kept."""
    features = model_features({name: valid[name].to_numpy() for name in INPUTS})
    return pd.DataFrame({name: features[name] for name in FEATURES}, index=valid.index)


def build_features(valid: pd.DataFrame, target_quantile: float = 0.95) -> pd.DataFrame:
    """Processed table (KEY, FEATURES..., TARGET) from rows that passed `RawTransactions`."""
    out = feature_frame(valid)
    out.insert(0, KEY, valid[TRANSACTION_ID].astype(str))
    amount = valid["Transaction Amount"]
    out[TARGET] = (amount >= high_amount_threshold(amount, target_quantile)).astype(np.int64)
    return out[[KEY, *FEATURES, TARGET]].reset_index(drop=True)
