"""Level 2: blenders over the level-1 OOF predictions, scored by nested CV on the shared folds."""
