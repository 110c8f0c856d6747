"""Studies: a whole comparison study (trainers/recipes × configurations × folds → validation → best
configuration / ensembles → post-processing → test prediction → report) from one JSON file, run by one
command on this machine or on a SLURM cluster. Documentation: ``docs/studies.md``.

Modules, one idea each:

* :mod:`~nnunet_ext.study.schema`    the study file: keys, defaults, validation (errors name the key)
* :mod:`~nnunet_ext.study.budget`    ``--budget`` overrides: short trainer names, time-compressed recipes
* :mod:`~nnunet_ext.study.checks`    checks against this machine before anything runs (dataset, trainers, folds)
* :mod:`~nnunet_ext.study.graph`     the jobs (command lines) and their dependencies, a pure function
* :mod:`~nnunet_ext.study.state`     what is done (nnU-Net's own files), running or failed (job records)
* :mod:`~nnunet_ext.study.resources` CPUs/GPUs/memory/time per job, nnU-Net's worker rules, SLURM limits
* :mod:`~nnunet_ext.study.local`     the local executor (one job per GPU, or on the CPU)
* :mod:`~nnunet_ext.study.slurm`     the SLURM executor (submitit, dependencies, requeue with ``--c``)
* :mod:`~nnunet_ext.study.report`    the study report (per trainer × checkpoint over all folds)
* :mod:`~nnunet_ext.study.runner`    putting it together for ``nnunet-ext study run/status/report``
"""
from nnunet_ext.study.schema import Study, StudyError, load_study

__all__ = ["Study", "StudyError", "load_study"]
