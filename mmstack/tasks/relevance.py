"""Image-text relevance (Flickr8k format): MSE on the 0..1 expert relevance, folds grouped by image,
submission ``image,query_id,relevance``."""
from ..data import relevance
from . import TaskSpec


def _no_generator(*_, **__) -> dict[str, int]:
    from ..errors import ConfigError

    raise ConfigError("make-data has no generator for the relevance task; point --input at a Flickr8k-format folder")


SPEC = TaskSpec(
    name="relevance",
    load=relevance.load,
    make_data=_no_generator,
    targets=relevance.TARGETS,
    key_columns=("image", "query_id"),
    group_column="image",
)
