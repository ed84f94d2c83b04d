"""The Rotate-and-Render GAN: ``rotate`` (pix2pixHD-style G) and ``rotatespade`` (SPADE G
conditioned on landmark maps). Both share this one class; ``rotatespade`` only changes
what the generator and discriminators are conditioned on.

``forward(data, mode)`` computes its own losses, so the trainer stays thin:
  generator             G(render with artifacts at pose a) vs the real photo: GAN + feature
                        matching + VGG (+ L1) losses; returns (losses, fake).
  generator_rotated     G(render at the random pose b) judged by D_rotate (no ground truth).
  discriminator         D on real vs G's (detached) output.
  discriminator_rotated D_rotate on real vs G's output at pose b.
  inference             G(data['input'], landmark map of data['landmarks']) -> image;
                        with --label_mask, optional data['source_yaw'] (B,) in degrees
                        skips the mask for near-frontal sources, as the original did.
``data`` for the first four is the dict made by ``make_pair`` from a dataset batch.

A generator with ``uses_masks`` (netG 'blend') also gets the render's hidden and stretched
masks (B, 2, H, W): in training those of the a->b->a input (hidden_b, stretched), for the
rotated step the stretched mask at b (training_pair gives no hidden mask at b: zeros), at
inference ``data['masks']`` (``view_masks`` of a rotated view, ``pair_masks`` of a pair).
The original generators are called exactly as before.

The discriminators see the condition (the render G repairs), the image and, for
rotatespade, the landmark map; fake and real go through D as one batch (as in SPADE), so
batch-norm statistics are shared. Discriminator losses are weighted by --lambda_D /
--lambda_rotate_D like the generator's adversarial terms, as in the original.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from models import networks
from models.landmark_map import label_mask, landmark_map
from models.registry import MODELS
from render.cuda_graph import CudaGraphed
from render.renderer import FaceMesh, sample_target_poses, training_pair
from render.settings import RenderSettings


def _unwrap(net: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (used where no gradient sync is wanted)."""
    return getattr(net, "module", net)


# The original skipped --label_mask at test time for sources within 0.255 rad of frontal.
LABEL_MASK_MIN_YAW = 14.6


@MODELS.register("rotate")
class RotateModel(nn.Module):
    uses_landmarks = False
    default_netG = "rotate"
    # Options that shape the generator's input besides the render settings (render.settings):
    # a checkpoint records them (``settings``) so inference and --continue_train feed G what
    # it was trained on.
    INPUT_OPTIONS = ("crop_size", "label_nc", "heatmap_size", "no_gaussian_landmark",
                     "label_mask")

    @classmethod
    def modify_commandline_options(cls, parser, is_train):
        parser.set_defaults(netG=cls.default_netG)
        if is_train:
            parser.add_argument(
                "--no_render_graph", action="store_true",
                help="render the training pairs eagerly. By default, on CUDA, the pair render "
                     "is replayed as a CUDA graph (one capture per batch shape, bit-identical "
                     "output, see render/cuda_graph.py), which launches far fewer "
                     "kernels; ignored on the CPU")
        return parser

    def __init__(self, opt, nets: dict | None = None):
        """``nets`` (name -> module, e.g. rebuilt from a checkpoint) are used instead of
        building those networks from the options."""
        super().__init__()
        nets = nets or {}
        self.opt = opt
        self.netG = nets["netG"] if "netG" in nets else networks.define_G(opt)
        self.uses_landmarks = self.conditioned_on_landmarks(self.netG)
        self.uses_masks = getattr(_unwrap(self.netG), "uses_masks", False)
        self.mesh = FaceMesh.mediapipe()
        self._graphed_pair = None  # CudaGraphed training_pair, made on first use
        self.netD = self.netD_rotate = None
        if opt.is_train:
            d_in = self.discriminator_input_nc(opt, self.netG)
            self.netD = nets["netD"] if "netD" in nets else networks.define_D(opt, d_in)
            if opt.train_rotate:
                self.netD_rotate = (nets["netD_rotate"] if "netD_rotate" in nets
                                    else networks.define_D(opt, d_in))
            self.criterion_gan = networks.GANLoss(opt.gan_mode)
            self.criterion_vgg = None if opt.no_vgg_loss else networks.VGGLoss(opt.vgg_weights)

    @classmethod
    def conditioned_on_landmarks(cls, netG) -> bool:
        """Whether the landmark map is drawn (and shown to the discriminators): for
        rotatespade, and for any generator that reads it (``netG`` a class or an instance),
        whichever --model asked for it."""
        return cls.uses_landmarks or _unwrap(netG).uses_landmarks

    @classmethod
    def discriminator_input_nc(cls, opt, netG) -> int:
        """Condition render + real/fake image, plus the landmark map when there is one."""
        return 3 + 3 + (opt.label_nc if cls.conditioned_on_landmarks(netG) else 0)

    @classmethod
    def settings_from_options(cls, opt) -> dict:
        """The option values this model's generator input depends on: --model, the
        INPUT_OPTIONS and every render setting (options missing from ``opt`` are left out,
        so an older checkpoint's options give what they have)."""
        names = ("model", *cls.INPUT_OPTIONS,
                 *(f.name for f in dataclasses.fields(RenderSettings)))
        return {k: getattr(opt, k) for k in names if hasattr(opt, k)}

    def settings(self) -> dict:
        return self.settings_from_options(self.opt)

    @property
    def device(self):
        return next(self.netG.parameters()).device

    def mesh_on(self, device) -> FaceMesh:
        self.mesh = self.mesh.to(device)
        return self.mesh

    # ------------------------------------------------------------------ data preparation
    def seg(self, landmarks, size):
        """The generator's landmark map (None for the plain 'rotate' model)."""
        if not self.uses_landmarks:
            return None
        return landmark_map(landmarks, size, self.opt.label_nc, self.opt.heatmap_size,
                            gaussian=not self.opt.no_gaussian_landmark)

    def apply_label_mask(self, image, landmarks, keep=None):
        """--label_mask: ``image`` with the chin / lower-nose region of ``landmarks`` set to 0;
        ``keep`` (B,) bool leaves those photos untouched. Without --label_mask: ``image``."""
        if not getattr(self.opt, "label_mask", False):
            return image
        region = label_mask(landmarks, image.shape[-1], 3 * self.opt.heatmap_size)
        region = region.to(image.device)
        if keep is not None:
            region = region & ~keep.to(image.device).view(-1, 1, 1, 1)
        return image.masked_fill(region, 0.0)

    @torch.no_grad()
    def make_pair(self, batch: dict, generator: torch.Generator) -> dict:
        """Render the self-supervised training pair of a dataset batch on the model's device.
        ``generator`` (CPU) draws the random target poses, so the pair is reproducible."""
        dev = self.device
        b = {k: v.to(dev, non_blocking=True) for k, v in batch.items() if torch.is_tensor(v)}
        # Poses are drawn from the loader's CPU copies: reading them back from the device
        # would make the host wait for the batch's transfer.
        yaw_b, pitch_b = sample_target_poses(batch["yaw"], batch["pitch"], generator,
                                             self.opt.pose_noise, self.opt.large_pose,
                                             self.opt.pitch_noise)
        args = (b["image"], b["vertices"], b["rotation"], b["scale"], b["translation"],
                yaw_b.to(dev), pitch_b.to(dev))
        pair = self._pair_renderer(dev)(*args)
        size = b["image"].shape[-1]
        pair["seg"] = self.seg(pair["landmarks_a"], size)
        pair["seg_b"] = self.seg(pair["landmarks_b"], size)
        if self.opt.label_mask:
            # The original masks a random half of the photos (drawn after the poses, so the
            # poses do not depend on this flag).
            keep = torch.rand(len(yaw_b), generator=generator) < 0.5
            pair["input"] = self.apply_label_mask(pair["input"], pair["landmarks_a"], keep)
            pair["rotated"] = self.apply_label_mask(pair["rotated"], pair["landmarks_b"], keep)
        return pair

    def _pair_renderer(self, device):
        """training_pair with this run's mesh and options; on CUDA a CUDA graph of it unless
        --no_render_graph."""
        mesh, opt = self.mesh_on(device), self.opt

        def render(*args):
            return training_pair(*args, mesh, settings=RenderSettings.from_options(opt))

        if getattr(opt, "no_render_graph", True) or device.type != "cuda":
            return render
        if self._graphed_pair is None:
            self._graphed_pair = CudaGraphed(render)
        return self._graphed_pair

    # ---------------------------------------------------------------------------- forward
    def forward(self, data: dict, mode: str, fake: torch.Tensor | None = None):
        """``fake``: for the discriminator modes, G's output to score (detached); None runs
        G on the pair."""
        if mode == "generator":
            return self.generator_loss(data)
        if mode == "generator_rotated":
            return self.generator_rotated_loss(data)
        if mode == "discriminator":
            return self.discriminator_loss(data["input"], data["seg"], data["real"], self.netD,
                                           "D", self.opt.lambda_D, masks=self.pair_masks(data),
                                           fake=fake)
        if mode == "discriminator_rotated":
            # No photo exists at pose b: the real sample is the photo with the condition of
            # its own pose a, so every sample D_rotate sees is consistent with its condition.
            return self.discriminator_loss(data["rotated"], data["seg_b"], data["real"],
                                           self.netD_rotate, "D_rotate", self.opt.lambda_rotate_D,
                                           real_condition=(data["input"], data["seg"]),
                                           masks=self.pair_masks(data, rotated=True), fake=fake)
        if mode == "inference":
            with torch.no_grad():
                image = data["input"]
                if self.opt.label_mask:
                    keep = None
                    if data.get("source_yaw") is not None:
                        keep = torch.as_tensor(data["source_yaw"]).abs() < LABEL_MASK_MIN_YAW
                    image = self.apply_label_mask(image, data["landmarks"], keep)
                if self.uses_masks and data.get("masks") is None:
                    raise ValueError("this generator (netG blend) needs data['masks'], the "
                                     "render's hidden and stretched masks (B, 2, H, W)")
                return self.run_G(self.netG, image, self.seg(data["landmarks"], image.shape[-1]),
                                  data.get("masks"))
        raise ValueError(f"unknown mode {mode!r}; choose generator, generator_rotated, "
                         "discriminator, discriminator_rotated or inference")

    def run_G(self, netG, image, seg, masks):
        """G's output; ``masks`` are passed only to a generator that reads them."""
        return netG(image, seg, masks=masks) if self.uses_masks else netG(image, seg)

    def pair_masks(self, data, rotated: bool = False):
        """The G masks of a training pair's input (None for generators without masks)."""
        if not self.uses_masks:
            return None
        if rotated:
            return torch.cat([torch.zeros_like(data["stretched_b"]), data["stretched_b"]], 1)
        return torch.cat([data["hidden_b"], data["stretched"]], 1)

    def view_masks(self, view):
        """The G masks of a ``rotated_view`` (None for generators without masks)."""
        if not self.uses_masks:
            return None
        return torch.cat([view["hidden"], view["stretched"]], 1)

    def _d_input(self, condition, seg, image):
        parts = [condition, image] + ([seg] if self.uses_landmarks else [])
        return torch.cat(parts, 1)

    def generator_loss(self, data):
        opt = self.opt
        fake = self.run_G(self.netG, data["input"], data["seg"], self.pair_masks(data))
        # D is only evaluated here, never stepped: skip DDP's gradient sync for it.
        netD = _unwrap(self.netD)
        pred_fake = netD(self._d_input(data["input"], data["seg"], fake))
        losses = {"G_GAN": self.criterion_gan(pred_fake, True, for_discriminator=False)
                  * opt.lambda_D}
        if not opt.no_ganFeat_loss:
            with torch.no_grad():
                pred_real = netD(self._d_input(data["input"], data["seg"], data["real"]))
            losses["G_GAN_Feat"] = networks.feature_matching_loss(pred_fake, pred_real,
                                                                  opt.lambda_feat)
        if self.criterion_vgg is not None:
            losses["G_VGG"] = self.criterion_vgg(fake, data["real"]) * opt.lambda_vgg
        if opt.lambda_l1 > 0:
            losses["G_L1"] = (fake - data["real"]).abs().mean() * opt.lambda_l1
        return losses, fake

    def generator_rotated_loss(self, data):
        fake = self.run_G(self.netG, data["rotated"], data["seg_b"],
                          self.pair_masks(data, rotated=True))
        pred = _unwrap(self.netD_rotate)(self._d_input(data["rotated"], data["seg_b"], fake))
        loss = self.criterion_gan(pred, True, for_discriminator=False) * self.opt.lambda_rotate_D
        return {"G_rotate_GAN": loss}, fake

    def discriminator_loss(self, condition, seg, real, netD, prefix="D", weight=1.0,
                           real_condition=None, masks=None, fake=None):
        """D on G(condition, seg[, masks]) (fake, or the given ``fake``) vs ``real``; the real
        sample is conditioned on ``real_condition`` = (render, seg) when given, else on the
        same (condition, seg)."""
        if fake is None:
            with torch.no_grad():
                # G is only evaluated here: the unwrapped module skips DDP's bookkeeping.
                fake = self.run_G(_unwrap(self.netG), condition, seg, masks).detach()
        n = fake.shape[0]
        real_cond, real_seg = real_condition or (condition, seg)
        pred = netD(torch.cat([self._d_input(condition, seg, fake),
                               self._d_input(real_cond, real_seg, real)], 0))
        pred_fake = [[f[:n] for f in scale] for scale in pred]
        pred_real = [[f[n:] for f in scale] for scale in pred]
        return {f"{prefix}_fake": self.criterion_gan(pred_fake, False) * weight,
                f"{prefix}_real": self.criterion_gan(pred_real, True) * weight}


@MODELS.register("rotatespade")
class RotateSPADEModel(RotateModel):
    uses_landmarks = True
    default_netG = "rotatespade"
