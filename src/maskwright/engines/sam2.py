"""``sam2`` engines (SAM 2 / 2.1 Hiera) on ``transformers.Sam2Model``, single images.

Differences from SAM handled here: the image is squashed to 1024x1024 (no padding), points scale by
``(1024 / W, 1024 / H)``, the embedding holds the two high-resolution feature maps besides the 64x64 one,
a padding point is always added, and low-res logits cover the squashed image (converted to and from
maskwright's padded convention at this boundary, see :mod:`maskwright.engines.sam_common`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from maskwright.engines import sam_common
from maskwright.engines.sam import SamFamilyEngine


class Sam2Engine(SamFamilyEngine):
    family = "sam2"
    high_res_names = ("high_res_feats_0", "high_res_feats_1")

    def _load_model(self) -> nn.Module:
        from transformers import Sam2Model

        return Sam2Model.from_pretrained(self.model_dir, dtype=torch.float32)

    def _preprocess(self, image: np.ndarray) -> tuple[np.ndarray, dict]:
        return sam_common.preprocess_sam2(image), {}

    def _encode(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        """``Sam2Model.get_image_embeddings`` in NCHW, with the vision encoder in its own dtype (bf16 or fp32)
        and the decoder's projections of the high-resolution levels in fp32."""
        model = self.model
        levels = [f.float() for f in model.vision_encoder(pixel_values, return_dict=True).fpn_hidden_states]
        s0 = model.mask_decoder.conv_s0(levels[0])
        s1 = model.mask_decoder.conv_s1(levels[1])
        emb = levels[-1] + model.no_memory_embedding.reshape(1, -1, 1, 1)  # "no memory" token of single images
        return {"image_embeddings": emb, "high_res_feats_0": s0, "high_res_feats_1": s1}

    def _transform_coords(self, coords: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        return sam_common.transform_coords_sam2(coords, original_size)

    def _pad_with_box(self) -> bool:
        return True

    def _mask_input_to_model(self, mask_input: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        return sam_common.padded_to_sam2_lowres(mask_input, original_size)

    def _postprocess(self, lowres: np.ndarray, original_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        masks = sam_common.sam2_masks(lowres, original_size)
        return masks, sam_common.sam2_lowres_to_padded(lowres, original_size)

    def _encode_shapes(self) -> list[torch.Tensor]:
        """Dummy embedding arrays with this config's shapes (no encoder run: that takes seconds on big models)."""
        model = self.model
        sizes = model.backbone_feature_sizes  # [[256, 256], [128, 128], [64, 64]] at 1024 input
        hidden = model.config.prompt_encoder_config.hidden_size
        return [
            torch.randn(1, hidden, *sizes[-1]),
            torch.randn(1, model.mask_decoder.conv_s0.out_channels, *sizes[0]),
            torch.randn(1, model.mask_decoder.conv_s1.out_channels, *sizes[1]),
        ]
