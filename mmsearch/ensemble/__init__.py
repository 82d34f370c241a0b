"""Post-hoc ensembles over all search trials' validation predictions (numpy only)."""

from mmsearch.ensemble.blending import blend
from mmsearch.ensemble.caruana import CaruanaEnsemble
from mmsearch.ensemble.learned import LearnedWeightsEnsemble

__all__ = ["CaruanaEnsemble", "LearnedWeightsEnsemble", "blend"]
