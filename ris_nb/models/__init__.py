"The model modules (lavt, mask_grounding, alignment, magnet, slots, sag, encoders); each registers its builder with `ris_nb.core.register_model`."
# Hand-written (nbdev creates sub-package __init__ files empty and never rewrites them): the public entry point
# `ris_nb.models.build_model` is the same function as `ris_nb.core.build_model`.
from ..core import build_model

__all__ = ["build_model"]
