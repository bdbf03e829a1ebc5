"""Architectures of the built-in world: real diffusers / transformers classes at tiny widths.

The UNet uses SD 1.x block types, so module names match SD's
(``down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k`` ...) and every method written
for SD runs on it unchanged. The text encoder is the text tower of a CLIP dual encoder that
we train contrastively on renders, exactly as SD 1.x uses OpenAI CLIP's text tower.
"""

from __future__ import annotations

import torch
from torch import nn

from erasure.offline import BOS_TOKEN_ID, CLIP_VOCAB_SIZE, EOS_TOKEN_ID
from erasure.world.render import ATTRIBUTES

IMAGE_SIZE = 32
LATENT_CHANNELS = 4
LATENT_SIZE = 8  # the VAE downsamples 4x
TEXT_WIDTH = 128


def clip_config():
    from transformers import CLIPConfig

    text = dict(
        vocab_size=CLIP_VOCAB_SIZE,
        hidden_size=TEXT_WIDTH,
        intermediate_size=4 * TEXT_WIDTH,
        num_hidden_layers=4,
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=TEXT_WIDTH,
        hidden_act="quick_gelu",
        bos_token_id=BOS_TOKEN_ID,
        eos_token_id=EOS_TOKEN_ID,
        pad_token_id=EOS_TOKEN_ID,
    )
    vision = dict(
        image_size=IMAGE_SIZE,
        patch_size=4,
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=3,
        num_attention_heads=4,
        projection_dim=TEXT_WIDTH,
        hidden_act="quick_gelu",
    )
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=TEXT_WIDTH)


def build_clip():
    from transformers import CLIPModel

    return CLIPModel(clip_config())


def build_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        latent_channels=LATENT_CHANNELS,
        # 8 groups, not diffusers' default 32: at 32 channels, 32 groups would normalise every
        # channel on its own and wash out colour, which this world is all about
        norm_num_groups=8,
        sample_size=IMAGE_SIZE,
    )


def build_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=LATENT_SIZE,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        cross_attention_dim=TEXT_WIDTH,
        attention_head_dim=8,
        norm_num_groups=8,  # see build_vae
    )


def noise_scheduler_config() -> dict:
    """SD 1.x's training noise schedule (scaled-linear betas, epsilon prediction)."""
    return dict(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
    )


def build_inference_scheduler():
    from diffusers import DDIMScheduler

    return DDIMScheduler(**noise_scheduler_config(), clip_sample=False, set_alpha_to_one=False, steps_offset=1)


class AttributeClassifier(nn.Module):
    """A small CNN with one head per attribute: the measuring instrument for this world.

    Each head has the attribute's values plus, for object attributes, a final "none" class
    (no object in the image), so an erased object that leaves an empty background is
    classified as such rather than forced into a shape.
    """

    def __init__(self, width: int = 32, attributes: dict[str, tuple[str, ...]] | None = None):
        super().__init__()
        w = width
        attributes = ATTRIBUTES if attributes is None else attributes
        # each head's class names: the attribute's values, plus "none" for every attribute but the background
        self.classes = {a: tuple(v) if a == "background" else tuple(v) + ("none",) for a, v in attributes.items()}

        def block(i: int, o: int, stride: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(i, o, 3, stride, 1), nn.BatchNorm2d(o), nn.GELU())

        self.features = nn.Sequential(
            block(3, w, 1), block(w, w, 1), block(w, 2 * w, 2), block(2 * w, 2 * w, 1),
            block(2 * w, 4 * w, 2), block(4 * w, 4 * w, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.heads = nn.ModuleDict({name: nn.Linear(4 * w, len(c)) for name, c in self.classes.items()})

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """``images``: float in [0, 1], (N, 3, H, W). Returns (N, 4*width) features (used for FID/KID)."""
        return self.features(images * 2 - 1)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.forward_features(images)
        return {name: head(f) for name, head in self.heads.items()}


def classifier_classes(attribute: str) -> tuple[str, ...]:
    values = ATTRIBUTES[attribute]
    return values if attribute == "background" else values + ("none",)
