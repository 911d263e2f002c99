"""Tiny random models for tests; the builders live in :mod:`protoseg.testing.tiny` (used by tiny presets)."""

from pathlib import Path

from protoseg.testing.tiny import _word_merges, tiny_clip, tiny_dinov2, write_tiny_clip_vocab

__all__ = ["_word_merges", "tiny_clip", "tiny_dinov2", "tiny_sam", "write_tiny_clip_vocab"]


def tiny_sam(folder: str | Path, image_size: int = 64, seed: int = 0) -> Path:
    """A random ``SamModel`` (2-layer ViT, 32-d) + a ``SamProcessor`` resizing to ``image_size``, saved in
    ``folder``; returns ``folder``."""
    import torch
    from transformers import (
        SamConfig,
        SamMaskDecoderConfig,
        SamModel,
        SamProcessor,
        SamPromptEncoderConfig,
        SamVisionConfig,
    )
    from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil

    folder = Path(folder)
    torch.manual_seed(seed)
    patch = 16
    vision = SamVisionConfig(hidden_size=32, output_channels=32, num_hidden_layers=2, num_attention_heads=2,
                             image_size=image_size, patch_size=patch, window_size=2, global_attn_indexes=[1],
                             num_pos_feats=16, mlp_dim=64)
    prompt = SamPromptEncoderConfig(hidden_size=32, image_size=image_size, patch_size=patch,
                                    mask_input_channels=4)
    decoder = SamMaskDecoderConfig(hidden_size=32, mlp_dim=64, num_hidden_layers=2, num_attention_heads=2,
                                   iou_head_hidden_dim=32)
    config = SamConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)
    model = SamModel(config)
    model.eval()
    model.save_pretrained(folder)
    mask_side = image_size // 4
    processor = SamProcessor(image_processor=SamImageProcessorPil(
        size={"longest_edge": image_size}, pad_size={"height": image_size, "width": image_size},
        mask_size={"longest_edge": mask_side}, mask_pad_size={"height": mask_side, "width": mask_side}))
    processor.save_pretrained(folder)
    return folder
