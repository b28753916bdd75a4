"""A user's own vision-encoder-decoder model from a local directory: loaded with local_files_only, nothing downloads."""
from __future__ import annotations

import pytest
from PIL import Image

from mmstack.describe.captioners import CaptionQuery, LocalVisionCaptioner
from mmstack.errors import ConfigError


def tiny_model(folder):
    """A randomly initialised ViT + GPT-2 captioner with a word-level tokenizer, saved with save_pretrained."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (GPT2Config, PreTrainedTokenizerFast, VisionEncoderDecoderConfig,
                              VisionEncoderDecoderModel, ViTConfig, ViTImageProcessor)

    words = ["[PAD]", "[BOS]", "[EOS]", "[UNK]", "a", "red", "jacket"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", bos_token="[BOS]", eos_token="[EOS]",
                            unk_token="[UNK]").save_pretrained(folder)
    enc = ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=32,
                    patch_size=16)
    dec = GPT2Config(vocab_size=len(words), n_embd=32, n_layer=1, n_head=2, n_positions=32, add_cross_attention=True,
                     bos_token_id=1, eos_token_id=2, pad_token_id=0)
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(enc, dec)
    config.decoder_start_token_id, config.pad_token_id, config.eos_token_id = 1, 0, 2
    VisionEncoderDecoderModel(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)


def test_local_model_loads_and_captions(tmp_path):
    tiny_model(tmp_path / "model")
    captioner = LocalVisionCaptioner(tmp_path / "model", max_new_tokens=4)
    text = captioner.describe(CaptionQuery(photos=[Image.new("RGB", (50, 40), "red")]))
    assert isinstance(text, str) and len(text.split()) <= 4
    assert set(text.split()) <= {"a", "red", "jacket", "[UNK]"}
    assert captioner.describe(CaptionQuery()) == ""  # no photo, nothing to caption


def test_bad_model_directory_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="no such model directory"):
        LocalVisionCaptioner(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="cannot load a vision-encoder-decoder model"):
        LocalVisionCaptioner(tmp_path / "empty")
