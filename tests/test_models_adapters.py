"""DINOv2 and CLIP adapters, loaded from tiny random checkpoints through the real loading code."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tiny_models import tiny_clip, tiny_dinov2
from transformers import AutoTokenizer, CLIPModel, Dinov2Model

from protoseg.errors import ProtosegError
from protoseg.models import DenseFeatureExtractor, ModelSet, load_features
from protoseg.models.clip import FREEDA_TEMPLATES, ClipModel
from protoseg.models.dinov2 import Dinov2Features

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
CLIP_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
CLIP_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def dinov2_dir(tmp_path_factory):
    return tiny_dinov2(tmp_path_factory.mktemp("dinov2"))


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return tiny_clip(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="module")
def dinov2(dinov2_dir):
    return Dinov2Features(str(dinov2_dir), device="cpu")


@pytest.fixture(scope="module")
def clip(clip_dir):
    return ClipModel(str(clip_dir), device="cpu")


def _image(h: int = 448, w: int = 448, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (1, 3, h, w), generator=g).float()


# ---------------------------------------------------------------------- DINOv2
def test_dinov2_attributes(dinov2, dinov2_dir):
    assert isinstance(dinov2, DenseFeatureExtractor)
    assert dinov2.encoder_id == str(dinov2_dir)
    assert dinov2.dim == 32
    assert dinov2.grid == (37, 37)
    assert dinov2.device == torch.device("cpu")


def test_dinov2_preprocessing_matches_hand_reference(dinov2):
    image = _image(448, 300)
    x = dinov2.preprocess(image)
    # torchvision Resize((518, 518)) on a float tensor == bilinear, align_corners=False, no antialias.
    ref = (F.interpolate(image, size=(518, 518), mode="bilinear", align_corners=False) / 255 - IMAGENET_MEAN)
    ref = ref / IMAGENET_STD
    assert x.shape == (1, 3, 518, 518)
    torch.testing.assert_close(x, ref, rtol=1e-5, atol=1e-5)
    antialiased = F.interpolate(_image(1036, 1036), size=(518, 518), mode="bilinear", antialias=True)
    assert not torch.allclose(dinov2.preprocess(_image(1036, 1036)),
                              (antialiased / 255 - IMAGENET_MEAN) / IMAGENET_STD, atol=1e-3)


def test_dinov2_drops_cls_and_reshapes(dinov2, dinov2_dir):
    images = torch.cat([_image(seed=1), _image(seed=2)])
    feats = dinov2(images)
    assert feats.shape == (2, 32, 37, 37) and feats.dtype == torch.float32
    model = Dinov2Model.from_pretrained(str(dinov2_dir)).eval()
    pixels = (F.interpolate(images, size=(518, 518), mode="bilinear", align_corners=False) / 255
              - IMAGENET_MEAN) / IMAGENET_STD
    with torch.no_grad():
        tokens = model(pixel_values=pixels).last_hidden_state  # [2, 1 + 1369, 32]
    expected = tokens[:, 1:].reshape(2, 37, 37, 32).permute(0, 3, 1, 2)
    torch.testing.assert_close(feats, expected, rtol=1e-4, atol=1e-4)
    # token (row 0, col 1) is patch 1, i.e. the third token including CLS
    torch.testing.assert_close(feats[:, :, 0, 1], tokens[:, 2], rtol=1e-4, atol=1e-4)
    # the output is not the CLS-including sequence shifted by one
    assert not torch.allclose(feats[:, :, 0, 0], tokens[:, 0], atol=1e-3)


def test_dinov2_register_tokens_are_dropped(tmp_path):
    from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    torch.manual_seed(0)
    cfg = Dinov2WithRegistersConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                    intermediate_size=64, patch_size=14, image_size=518,
                                    num_register_tokens=4)
    Dinov2WithRegistersModel(cfg).save_pretrained(tmp_path)
    adapter = Dinov2Features(str(tmp_path), device="cpu")
    assert adapter.num_prefix_tokens == 5
    image = _image(seed=3)
    model = Dinov2WithRegistersModel.from_pretrained(str(tmp_path)).eval()
    with torch.no_grad():
        tokens = model(pixel_values=adapter.preprocess(image)).last_hidden_state
    assert tokens.shape[1] == 1 + 4 + 37 * 37
    torch.testing.assert_close(adapter(image), tokens[:, 5:].reshape(1, 37, 37, 32).permute(0, 3, 1, 2))


def test_dinov2_image_size_sets_grid(dinov2_dir):
    small = Dinov2Features(str(dinov2_dir), device="cpu", image_size=224)
    assert small.grid == (16, 16)
    assert small(_image(100, 120)).shape == (1, 32, 16, 16)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        Dinov2Features(str(dinov2_dir), device="cpu", image_size=500)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_dinov2_half_precision(dinov2_dir, dinov2, dtype):
    half = Dinov2Features(str(dinov2_dir), device="cpu", dtype=dtype)
    assert next(half.model.parameters()).dtype == dtype
    image = _image(seed=4)
    out = half(image)
    assert out.dtype == torch.float32 and out.shape == (1, 32, 37, 37)
    assert torch.isfinite(out).all()
    ref = dinov2(image)
    cos = F.cosine_similarity(out.flatten(2), ref.flatten(2), dim=1)
    assert cos.min() > 0.98


def test_load_features_and_modelset(dinov2_dir, clip_dir):
    feats = load_features(str(dinov2_dir), device="cpu")
    assert isinstance(feats, Dinov2Features)
    models = ModelSet(str(dinov2_dir), clip=str(clip_dir), device="cpu")
    assert isinstance(models.features, Dinov2Features) and isinstance(models.clip, ClipModel)


def test_missing_folder_is_a_protoseg_error(tmp_path):
    with pytest.raises(ProtosegError, match="cannot load model weights"):
        Dinov2Features(str(tmp_path / "nowhere"), device="cpu")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ProtosegError, match="hf download <hub id> --local-dir DIR"):
        ClipModel(str(empty), device="cpu")


# ---------------------------------------------------------------------- CLIP
def test_freeda_templates_verbatim():
    assert FREEDA_TEMPLATES == ("itap of a {}.", "a bad photo of a {}.", "a origami {}.",
                                "a photo of the large {}.", "a {} in a video game.", "art of the {}.",
                                "a photo of the small {}.")


def test_tiny_tokenizer_covers_templates(clip_dir):
    tok = AutoTokenizer.from_pretrained(str(clip_dir))
    for template in FREEDA_TEMPLATES:
        ids = tok(template.format("potted plant"))["input_ids"]
        assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
        assert tok.unk_token_id not in ids[1:-1]
        assert tok.decode(ids, skip_special_tokens=True).replace(" ", "") == \
            template.format("potted plant").replace(" ", "")


def test_clip_attributes(clip, clip_dir):
    assert clip.encoder_id == str(clip_dir)
    assert clip.dim == 16
    assert clip.image_size == 224
    assert clip.mean == pytest.approx(tuple(CLIP_MEAN.flatten().tolist()))
    assert clip.std == pytest.approx(tuple(CLIP_STD.flatten().tolist()))


def test_encode_text_is_raw_projection(clip, clip_dir):
    texts = ["a photo of the cat.", "art of the dog in a long sentence about a video game."]
    out = clip.encode_text(texts)
    assert out.shape == (2, 16) and out.dtype == torch.float32
    model = CLIPModel.from_pretrained(str(clip_dir)).eval()
    tok = AutoTokenizer.from_pretrained(str(clip_dir))
    batch = tok(texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model.text_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        eos = (batch["input_ids"] == tok.eos_token_id).int().argmax(-1)
        ref = model.text_projection(hidden.last_hidden_state[torch.arange(2), eos])
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(out.norm(dim=-1), torch.ones(2), atol=1e-3)  # not normalised
    # each text is embedded independently of its batch neighbours (padding never leaks in)
    torch.testing.assert_close(clip.encode_text(texts[:1]), out[:1], rtol=1e-4, atol=1e-5)


def test_encode_text_truncates_to_77_tokens(clip):
    long = " ".join(["the"] * 200)
    tokens = clip.tokenize([long, "a cat"])
    assert tokens["input_ids"].shape == (2, 77)
    assert clip.encode_text([long]).shape == (1, 16)


def test_encode_text_batches(clip_dir):
    small = ClipModel(str(clip_dir), device="cpu", batch_size=3)
    texts = [t.format(n) for n in ("cat", "sky") for t in FREEDA_TEMPLATES]
    whole = ClipModel(str(clip_dir), device="cpu").encode_text(texts)
    torch.testing.assert_close(small.encode_text(texts), whole, rtol=1e-4, atol=1e-5)


def test_encode_classes_freeda_rule(clip):
    names = ["cat", "bed ", "sky-other"]
    freeda = clip.encode_classes(names)
    usual = clip.encode_classes(names, normalize_each=True)
    assert freeda.shape == (3, 16)
    torch.testing.assert_close(freeda.norm(dim=-1), torch.ones(3))
    prompts = [t.format(n) for n in names for t in FREEDA_TEMPLATES]
    assert prompts[7] == "itap of a bed ."  # names are kept byte-identical
    raw = clip.encode_text(prompts).view(3, 7, 16)
    torch.testing.assert_close(freeda, F.normalize(raw.mean(1), dim=-1, eps=1e-6))
    torch.testing.assert_close(usual, F.normalize(F.normalize(raw, dim=-1).mean(1), dim=-1))
    assert (freeda - usual).abs().max() > 1e-4


def test_encode_classes_custom_templates(clip):
    one = clip.encode_classes(["cat"], templates=["a photo of a {}."])
    torch.testing.assert_close(one, F.normalize(clip.encode_text(["a photo of a cat."]), dim=-1))
    with pytest.raises(ProtosegError):
        clip.encode_classes(["cat"], templates=["no placeholder"])


def test_clip_image_preprocessing_and_normalisation(clip, clip_dir):
    image = torch.cat([_image(448, 448, seed=5), _image(448, 448, seed=6)])
    x = clip.preprocess(image)
    resized = F.interpolate(image, size=(224, 224), mode="bicubic", align_corners=False)
    ref = (resized / 255 - CLIP_MEAN) / CLIP_STD
    torch.testing.assert_close(x, ref, rtol=1e-5, atol=1e-5)
    emb = clip.encode_images(image)
    assert emb.shape == (2, 16)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(2))
    model = CLIPModel.from_pretrained(str(clip_dir)).eval()
    with torch.no_grad():
        pooled = model.vision_model(pixel_values=ref).pooler_output
        expected = F.normalize(model.visual_projection(pooled), dim=-1)
    torch.testing.assert_close(emb, expected, rtol=1e-4, atol=1e-5)


def test_clip_reads_processor_statistics(tmp_path):
    folder = tiny_clip(tmp_path / "clip")
    (folder / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5, 0.5, 0.5],
                                                                 "image_std": [0.25, 0.25, 0.25]}))
    clip = ClipModel(str(folder), device="cpu")
    assert clip.mean == (0.5, 0.5, 0.5) and clip.std == (0.25, 0.25, 0.25)
    image = torch.full((1, 3, 224, 224), 255.0)
    torch.testing.assert_close(clip.preprocess(image), torch.full((1, 3, 224, 224), 2.0))


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_clip_half_precision(clip_dir, clip, dtype):
    half = ClipModel(str(clip_dir), device="cpu", dtype=dtype)
    assert next(half.model.parameters()).dtype == getattr(torch, dtype)
    text = half.encode_classes(["cat", "dog"])
    image = half.encode_images(_image(seed=7))
    assert text.dtype == image.dtype == torch.float32
    torch.testing.assert_close(image.norm(dim=-1), torch.ones(1), rtol=1e-3, atol=1e-3)
    assert F.cosine_similarity(text, clip.encode_classes(["cat", "dog"])).min() > 0.98


def test_text_keys_agree_with_encode_classes(clip):
    from protoseg.generate.keys import mean_template_embeddings

    nouns = ["cat", "potted plant"]
    for normalize_each in (False, True):
        keys = mean_template_embeddings(clip, nouns, FREEDA_TEMPLATES, normalize_each=normalize_each)
        expected = clip.encode_classes(nouns, normalize_each=normalize_each).numpy()
        np.testing.assert_allclose(keys, expected, rtol=1e-5, atol=1e-6)
