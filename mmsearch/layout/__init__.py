"""On-disk layouts, one owner each: a trial's checkpoint and run directories (checkpoint_dir)
and an experiment directory (experiment_dir). Other modules ask these for paths and never spell a
file name. (The prepared data/ directory is mmsearch.data.prepare's, the frozen towers' cache in it,
data/features/, mmsearch.data.feature_cache's; a bundle is mmsearch.bundle's.)
Torch-free: numpy and JSON."""
from .checkpoint_dir import CheckpointDir, IncompleteCheckpoint, TrialRunDir
from .experiment_dir import ExperimentDir

__all__ = ["CheckpointDir", "ExperimentDir", "IncompleteCheckpoint", "TrialRunDir"]
