"""Exported ensembles: `export.export_bundle` writes a bundle (JSON + safetensors), `manifest`
checks one, `predictor.Predictor` loads one and scores new rows without Ray.

Only the manifest code loads here; the predictor (torch) loads on first use of `Predictor`."""
from .manifest import BundleError

__all__ = ["BundleError", "Predictor", "load_bundle", "export_bundle"]


def __getattr__(name: str):
    if name in ("Predictor", "load_bundle"):
        from . import predictor

        return getattr(predictor, name)
    if name == "export_bundle":
        from .export import export_bundle

        return export_bundle
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
