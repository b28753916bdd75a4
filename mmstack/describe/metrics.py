"""Caption metrics from maintained packages: BLEU-1..4 (sacrebleu, corpus level), ROUGE-L F (rouge-score, with a
Unicode word tokenizer: its default one drops Cyrillic), CIDEr (pycocoevalcap's CIDEr-D scorer on lower-cased
word tokens; its Java parts, the PTB tokenizer, METEOR and SPICE, are not used), and the USE cosine between each
hypothesis and its closest reference (:mod:`mmstack.features.text_embed`).
"""
from __future__ import annotations

import re
from typing import Sequence

import numpy as np

WORDS = re.compile(r"\w+", re.UNICODE)


class _WordTokenizer:
    """rouge-score's tokenizer interface: lower-cased Unicode words."""

    @staticmethod
    def tokenize(text: str) -> list[str]:
        return WORDS.findall(text.lower())


def _words(text: str) -> str:
    return " ".join(WORDS.findall(text.lower()))


def bleu(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """Corpus BLEU-1..4 (0..100), each with n-grams up to n, on sacrebleu's "intl" tokenization."""
    from sacrebleu.metrics import BLEU

    n_refs = max(len(r) for r in references)
    streams = [[refs[k] if k < len(refs) else None for refs in references] for k in range(n_refs)]
    out = {}
    for n in range(1, 5):
        scorer = BLEU(max_ngram_order=n, tokenize="intl")
        out[f"bleu{n}"] = float(scorer.corpus_score(list(hypotheses), streams).score)
    return out


def rouge_l(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Mean over captions of the best ROUGE-L F-measure against any of its references (0..1)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_WordTokenizer())
    scores = [max(scorer.score(ref, hyp)["rougeL"].fmeasure for ref in refs)
              for hyp, refs in zip(hypotheses, references)]
    return float(np.mean(scores)) if scores else 0.0


def cider(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """CIDEr-D (pycocoevalcap) over the corpus; document frequencies come from these references."""
    from pycocoevalcap.cider.cider import Cider

    gts = {i: [_words(r) for r in refs] for i, refs in enumerate(references)}
    res = {i: [_words(h) or "_"] for i, h in enumerate(hypotheses)}
    score, _ = Cider().compute_score(gts, res)
    return float(score)


def use_cosine(hypotheses: Sequence[str], references: Sequence[Sequence[str]], encoder=None) -> float:
    """Mean over captions of the USE cosine between the hypothesis and its closest reference."""
    from ..features.text_embed import UseEncoder

    encoder = encoder or UseEncoder()
    flat = [r for refs in references for r in refs]
    hyp = encoder.encode([h or " " for h in hypotheses])
    ref = encoder.encode(flat)
    out, start = [], 0
    for i, refs in enumerate(references):
        out.append(float((ref[start:start + len(refs)] @ hyp[i]).max()))
        start += len(refs)
    return float(np.mean(out)) if out else 0.0


def caption_metrics(hypotheses: Sequence[str], references: Sequence[Sequence[str]], encoder=None) -> dict[str, float]:
    """BLEU-1..4, ROUGE-L, CIDEr and USE cosine of ``hypotheses`` against their ``references`` (one list each)."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} reference lists")
    out = bleu(hypotheses, references)
    out["rouge_l"] = rouge_l(hypotheses, references)
    out["cider"] = cider(hypotheses, references)
    out["use_cos"] = use_cosine(hypotheses, references, encoder)
    return out
