"""``blend``: a small U-Net that repairs only what the render got wrong.

The original's generators re-synthesise every pixel. Most of a rotated render is right,
so this one predicts an image ``g`` and a soft blend mask ``m`` and returns

    m * g + (1 - m) * render

It sees the render plus the render's ``hidden`` (surface not visible in the source) and
``stretched`` (texture smeared from a grown triangle, or from outside the crop) masks, and,
with ``label_nc > 0`` (the rotatespade model), the landmark map. Skip connections carry
detail from the encoder to the decoder. With ``blend_downsample`` the U-Net runs on a 2x
average-pooled copy of its input and its image and mask logits are upsampled
(bilinear) before the blend, so the blend, and every pixel the mask leaves to the render,
is at full resolution.

The mask starts as a prior, the union of the hidden and stretched masks: its logit is the
net's output plus ``6 * prior - 4`` (about 0.88 on artifacts, 0.02 elsewhere), so a new
net already leaves visible pixels to the render and only has to learn corrections (with
an offset of -2, 12 % of an untrained image leaked into every visible pixel, and the
reconstruction of a first CPU run fell 1.6 dB below the render's).

With ``keep_seen`` the mask is also multiplied by that union, widened by ``SEEN_MARGIN``
pixels at the output resolution: every pixel the render saw in the photo, except those
within that margin of a hidden or stretched one, is the render's, bit for bit, and the net
paints only what the render had to make up (and blends it into its surroundings). A net
free to touch every pixel learns on a->b->a pairs, whose seen pixels were resampled twice,
to sharpen them, and then over-sharpens a real rotation's (resampled once): shipped model
v4 scored a worse identity distance than the bare render at 0 degrees (0.205 against 0.194
on 200 held-out photos); the same weights with the mask kept off the seen pixels scored
0.190 against the symmetry fill's 0.185 on 40 photos, and a 0.4 dB higher reconstruction
PSNR.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.networks.architecture import ResnetBlock
from models.networks.generator import RotateGenerator, add_flag
from models.networks.normalization import get_norm_layer
from models.registry import GENERATORS, MODELS, BuiltFromArgs

MASK_CHANNELS = 2  # hidden, stretched
PRIOR_GAIN, PRIOR_OFFSET = 6.0, -4.0
# keep_seen: how far (px, at the output resolution) the repaintable region reaches past the
# hidden and stretched masks, so the net can blend its repair into the seen pixels around it
# (40 held-out photos, v4's weights: 3 px gave a 0.1 dB higher PSNR than 0 px, same identity).
SEEN_MARGIN = 3


@GENERATORS.register("blend")
class BlendGenerator(BuiltFromArgs, nn.Module):
    """U-Net (stride-2 encoder, nearest-upsampling decoder with skips) -> image + blend mask."""

    uses_masks = True  # forward reads ``masks`` (B, 2, H, W): hidden, stretched

    def __init__(
        self,
        input_nc: int = 3,          # Channels of the rendered input image.
        output_nc: int = 3,         # Channels of the produced image.
        label_nc: int = 0,          # Landmark-map channels read (0: none, the 'rotate' model).
        ngf: int = 32,              # Width of the first level; doubles per level (cap 8x).
        n_downsample_G: int = 3,    # Stride-2 levels of the U-Net.
        n_blocks_G: int = 2,        # Residual blocks at the bottleneck.
        norm_G: str = "spectralinstance",  # Norm string, see normalization.parse_norm.
        blend_downsample: bool = True,  # Run the U-Net at half resolution, blend at full.
        keep_seen: bool = False,    # Leave seen pixels (beyond SEEN_MARGIN) to the render.
    ):
        super().__init__()
        self.label_nc, self.output_nc = label_nc, output_nc
        self.n_downsample_G, self.blend_downsample = n_downsample_G, blend_downsample
        self.keep_seen = keep_seen
        add_norm = get_norm_layer(norm_G)
        width = [ngf * min(2**i, 8) for i in range(n_downsample_G + 1)]
        c_in = input_nc + MASK_CHANNELS + label_nc
        self.stem = nn.Sequential(add_norm(nn.Conv2d(c_in, width[0], 3, padding=1)),
                                  nn.ReLU(inplace=True))
        self.down = nn.ModuleList(
            nn.Sequential(add_norm(nn.Conv2d(width[i], width[i + 1], 3, stride=2, padding=1)),
                          nn.ReLU(inplace=True))
            for i in range(n_downsample_G))
        self.blocks = nn.Sequential(*(ResnetBlock(width[-1], add_norm)
                                      for _ in range(n_blocks_G)))
        # up[i]: from level i+1 (upsampled) concatenated with the skip of level i, to level i.
        self.up = nn.ModuleList(
            nn.Sequential(add_norm(nn.Conv2d(width[i + 1] + width[i], width[i], 3, padding=1)),
                          nn.ReLU(inplace=True))
            for i in reversed(range(n_downsample_G)))
        self.head = nn.Conv2d(width[0], output_nc + 1, 3, padding=1)

    @property
    def uses_landmarks(self) -> bool:
        return self.label_nc > 0

    @classmethod
    def args_from_opt(cls, opt) -> dict:
        # The landmark map is read when the model draws one (rotatespade).
        landmarks = MODELS.get(opt.model).uses_landmarks if hasattr(opt, "model") else False
        return dict(label_nc=opt.label_nc if landmarks else 0, ngf=opt.ngf,
                    n_downsample_G=opt.n_downsample_G, n_blocks_G=opt.n_blocks_G,
                    norm_G=opt.norm_G, blend_downsample=not opt.no_blend_downsample,
                    # options saved before the flag existed: the net as it was trained then
                    keep_seen=not getattr(opt, "blend_repaints_seen", True))

    @classmethod
    def options_from_args(cls, args: dict) -> dict:
        # The two switches are flags that say the opposite of the arguments; a file saved
        # before keep_seen existed was trained without it.
        return dict(args, no_blend_downsample=not args.get("blend_downsample", True),
                    blend_repaints_seen=not args.get("keep_seen", False))

    @staticmethod
    def modify_commandline_options(parser, is_train):
        RotateGenerator.modify_commandline_options(parser, is_train)
        add_flag(parser, "--no_blend_downsample", action="store_true",
                 help="netG blend: run the U-Net at the output resolution (default: at half "
                      "of it, blended at full resolution)")
        add_flag(parser, "--blend_repaints_seen", action="store_true",
                 help="netG blend: let the net change pixels the render saw (default: "
                      "those stay the render's, exactly; the net repaints only the hidden "
                      "and stretched ones and a 3-px margin around them)")
        return parser

    def forward(self, image: torch.Tensor, seg: torch.Tensor | None = None,
                masks: torch.Tensor | None = None, return_mask: bool = False):
        """``image`` (B, 3, H, W) the render, ``masks`` (B, 2, H, W) its hidden and stretched
        masks in [0, 1], ``seg`` the landmark map (read when label_nc > 0). Returns the
        blended image, and with ``return_mask`` also the blend mask (B, 1, H, W)."""
        if masks is None or masks.shape[1] != MASK_CHANNELS:
            raise ValueError("netG 'blend' needs masks (B, 2, H, W): the render's hidden and "
                             "stretched masks")
        if self.uses_landmarks and seg is None:
            raise ValueError("netG 'blend' with label_nc > 0 needs the landmark map seg")
        factor = 2 ** (self.n_downsample_G + self.blend_downsample)
        h, w = image.shape[-2:]
        if h % factor or w % factor:
            raise ValueError(f"generator input {h}x{w} must be divisible by {factor} "
                             "(2**n_downsample_G, times 2 with the half-resolution U-Net)")
        x = torch.cat([image, masks] + ([seg] if self.uses_landmarks else []), 1)
        if self.blend_downsample:
            x = F.avg_pool2d(x, 2)
        prior = x[:, image.shape[1]:image.shape[1] + MASK_CHANNELS].amax(1, keepdim=True)
        skips = [self.stem(x)]
        for down in self.down:
            skips.append(down(skips[-1]))
        y = self.blocks(skips.pop())
        for up in self.up:
            y = F.interpolate(y, scale_factor=2, mode="nearest")
            y = up(torch.cat([y, skips.pop()], 1))
        out = self.head(y)
        logit = out[:, self.output_nc:] + PRIOR_GAIN * prior + PRIOR_OFFSET
        out = torch.cat([torch.tanh(out[:, :self.output_nc]), logit], 1)
        if self.blend_downsample:
            out = F.interpolate(out, scale_factor=2, mode="bilinear", align_corners=False)
        generated, mask = out[:, :self.output_nc], torch.sigmoid(out[:, self.output_nc:])
        if self.keep_seen:
            repair = masks.amax(1, keepdim=True)
            if SEEN_MARGIN:
                repair = F.max_pool2d(repair, 2 * SEEN_MARGIN + 1, 1, SEEN_MARGIN)
            mask = mask * repair.to(mask.dtype)
        blended = mask * generated + (1 - mask) * image
        return (blended, mask) if return_mask else blended
