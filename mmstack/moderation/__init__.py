"""Moderation of Russian text: obfuscation normalisation (normalise), the lexicon of obscene/insulting roots
(lexicon, lexicon.toml), the toxicity classifier and its shipped model (toxicity), batch screening for
``mmstack moderate`` (screen) and the obfuscations used to test it (distort)."""
