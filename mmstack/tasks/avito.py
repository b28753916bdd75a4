"""Avito Demand Prediction: RMSE on deal_probability, submission ``item_id,deal_probability``."""
from ..data import avito
from ..data.avito_synth import write_avito
from . import TaskSpec

SPEC = TaskSpec(
    name="avito",
    load=avito.load,
    make_data=write_avito,
    targets=avito.TARGETS,
    key_columns=(avito.ID,),
    group_column="user_id",
)
