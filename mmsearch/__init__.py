"""mmsearch: search over the bag of tricks for multimodal AutoML on Ray.

Public API (heavy dependencies load on first use of the submodules):
  mmsearch.data.prepare.prepare        table -> prepared data directory
  mmsearch.config.TrialConfig          typed trial configuration
  mmsearch.train.run.run_local/run_ray train one trial
  mmsearch.search.experiment           create / run / resume a search
  mmsearch.search.pool.load_pool       every trial's predictions and weights, for ensembling
  mmsearch.ensemble                    CaruanaEnsemble, LearnedWeightsEnsemble (numpy only)
"""
__version__ = "0.1.0"
__all__ = ["__version__"]
