"""mmsearch: search over the bag of tricks for multimodal AutoML on Ray.

Public API (heavy dependencies load on first use of the submodules):
  mmsearch.data.prepare.prepare        table -> prepared data directory
  mmsearch.config.TrialConfig          typed trial configuration
  mmsearch.train.run.run_local/run_ray train one trial
  mmsearch.search.experiment           create / run / resume a search
  mmsearch.search.pool.load_pool       every trial's predictions and weights, for ensembling
  mmsearch.ensemble                    CaruanaEnsemble, LearnedWeightsEnsemble (numpy only)
  mmsearch.build_ensemble              an experiment's ensemble, chosen on val, scored on holdout
  mmsearch.export_bundle               experiment -> self-contained bundle (JSON + safetensors)
  mmsearch.Predictor / load_bundle     a bundle's predict / predict_proba / evaluate (no Ray)
  mmsearch.report                      an experiment's report as DataFrames (which tricks helped, ...)
"""
__version__ = "0.1.0"
__all__ = ["__version__", "Predictor", "load_bundle", "export_bundle", "build_ensemble", "report"]


def __getattr__(name: str):
    # lazy: `import mmsearch` stays cheap; torch loads only when a Predictor is asked for
    if name in ("Predictor", "load_bundle", "export_bundle"):
        from . import bundle

        return getattr(bundle, name)
    if name == "build_ensemble":
        from .ensemble.build import build_ensemble

        return build_ensemble
    if name == "report":  # the package is mmsearch.reporting: a submodule named report would shadow this
        from .reporting import report

        return report
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
