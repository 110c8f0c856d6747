"""The term catalogue, re-exported for the trainers that import it from here; it lives in
:mod:`nnunet_ext.term_catalogue`, below both :mod:`nnunet_ext.recipes` and :mod:`nnunet_ext.trainers`."""
from nnunet_ext.term_catalogue import *  # noqa: F401,F403
from nnunet_ext.term_catalogue import __all__  # noqa: F401
