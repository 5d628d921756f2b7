"""Training of the mask classifiers (SMART/FISA, Mask-Adapter): recipes, data, matching,
losses, the loop and checkpoints. ``training/train.py`` is the command line."""
from .recipe import Recipe, load_recipe, recipe_names

__all__ = ["Recipe", "load_recipe", "recipe_names", "Trainer"]


def __getattr__(name):
    if name == "Trainer":  # the loop imports the model stack; keep recipe checks light
        from .loop import Trainer
        return Trainer
    raise AttributeError(name)
