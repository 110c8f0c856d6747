"""Training-length variants named the nnU-Net way, created on demand.

nnU-Net ships ``nnUNetTrainer_5epochs`` and friends as hand-written subclasses. Here any registered
trainer ``T`` has the variants

* ``T_<E>epochs``            E epochs of nnU-Net's 250 iterations (``T_1epoch`` for one), and
* ``T_<E>epochs_<I>iters``   E epochs of I training iterations and max(1, I // 5) validation
  iterations (nnU-Net's 250:50 ratio),

created the first time the name is looked up and cached, so that nnU-Net's trainer lookup, pickling and
``from nnunet_ext.trainers import ...`` all return the very same class object. Each name is its own
results folder, as with nnU-Net's own variants.
"""
from __future__ import annotations

import re

import torch

_BUDGET_NAME = re.compile(
    r"^(?P<base>[A-Za-z][A-Za-z0-9]*?)_(?P<epochs>[1-9]\d*)(?P<unit>epochs?)(?:_(?P<iters>[1-9]\d*)iters)?$"
)
_cache: dict[str, type] = {}


def parse_budget_name(name: str) -> tuple[str, int, int | None] | None:
    """``"TopoTrainer_2epochs_10iters"`` → ``("TopoTrainer", 2, 10)``; ``None`` if not a budget name."""
    match = _BUDGET_NAME.match(name)
    if match is None:
        return None
    epochs = int(match["epochs"])
    if (match["unit"] == "epoch") != (epochs == 1):
        return None  # "T_1epoch" and "T_2epochs", never "T_1epochs" / "T_2epoch": one spelling per variant
    return match["base"], epochs, int(match["iters"]) if match["iters"] else None


def budget_variant(base: type, epochs: int, iterations: int | None, module: str) -> type:
    """The (cached) subclass of ``base`` that trains ``epochs`` epochs of ``iterations`` iterations."""
    suffix = f"{epochs}epoch" + ("" if epochs == 1 else "s") + (f"_{iterations}iters" if iterations else "")
    name = f"{base.__name__}_{suffix}"
    if name in _cache:
        return _cache[name]

    # nnU-Net records the constructor arguments by name: keep nnUNetTrainer.__init__'s exact signature
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        base.__init__(self, plans, configuration, fold, dataset_json, device)
        self.num_epochs = epochs
        if iterations is not None:
            self.num_iterations_per_epoch = iterations
            self.num_val_iterations_per_epoch = max(1, iterations // 5)

    doc = f"{base.__name__} for {epochs} epoch(s)" + (f" of {iterations} iterations." if iterations else ".")
    variant = type(name, (base,), {"__init__": __init__, "__doc__": doc, "__module__": module, "__qualname__": name})
    _cache[name] = variant
    return variant
