"The model modules (lavt, mask_grounding, alignment, magnet, slots, sag, encoders); each model registers its builder and capabilities with `ris_nb.core.register_model`."
# Hand-written (nbdev creates sub-package __init__ files empty and never rewrites them). Importing this package registers
# every model, so whoever builds one (training, evaluation, the CLI: all built after the models) imports it; `ris_nb.core`
# holds only the registry and never imports the models. `ris_nb.models.build_model` is `ris_nb.core.build_model`.
from ..core import build_model, model_spec
from . import lavt, mask_grounding, magnet, sag   # noqa: F401  (their `@register_model` lines run; mask_grounding attaches MG to LAVT)
from .. import official   # noqa: F401,E402  (appendix 94: official Swin weights for SwinBackbone.load_official)

__all__ = ["build_model", "model_spec"]
