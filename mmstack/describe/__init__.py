"""Listing description service: validate a seller's attributes and photos, moderate them, mask numbers, tell one
item from many, pick the best photo and write a description (issue 17; FACTS.md section 4).

Modules, in the order a request meets them: :mod:`validate` (attributes and photos, under limits),
:mod:`encode` (photo and text features, once per listing), :mod:`moderation` (verdicts with scores),
:mod:`masking` (typed number placeholders and their values), :mod:`diversity` (<SINGLE> / <VARIATIVE>),
:mod:`best_photo` (the image-text score), :mod:`captioners` (retrieval-and-fill, a small net, a local
vision-encoder-decoder), :mod:`pipeline` (all of it for one listing), :mod:`service` (FastAPI app and page).
:mod:`listings` draws the labelled listings from the embedded Avito generator, :mod:`train` trains the shipped
models, :mod:`metrics` scores captions.
"""
