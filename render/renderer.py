"""Rotate and render fitted faces, and build the paper's self-supervised training pairs.

Everything is batched PyTorch on the tensors' device (CPU or CUDA), forward only. Images are
(B, 3, H, W) in [-1, 1] (the GAN's range); meshes are (B, V, 3) in the image's pixel frame
(x right, y down, z away from the camera, pixel centres at +0.5), as in ``face3d``.

Texturing is per pixel: each rendered pixel interpolates the SOURCE-image coordinates of its
triangle's vertices and samples the source photo there with ``grid_sample``, so a coarse
mesh keeps the photo's full resolution. Per-vertex colours (the original's way) are offered
for comparison. A rendered pixel is *hidden* when its surface point was not visible in the
source view (a z-buffer test against the source render); hidden pixels keep the smeared
texture of whatever covered them in the source, as in the original, unless the
symmetry-aware fill is on, which copies the colour of the mirror-symmetric surface point
when that one was visible.

On the CPU with the numba rasteriser (the default; ``RR_RASTERIZER=torch`` picks the
PyTorch path for both) that per-pixel work is one compiled pass, render/texture_numba.py,
with the same results bit for bit. A pose sweep prepares each photo's source pose once
(``source_view``: its whole-image mesh, raster, z-test slack and fill) and renders every
pose from it (``rotated_view(..., source=)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from face3d.pose import euler_to_matrix
from render import rasterizer, whole_image
from render.rasterizer import Fragments, rasterize, rasterize_depth
from render.settings import RenderSettings


class FaceMesh:
    """The shared topology on a device: triangles, mirror pairing, landmark indices.

    Build it from ``face3d.topology.load_topology()`` (MediaPipe mesh) or any triangle list
    (e.g. the 3DDFA BFM mesh); ``mirror`` and ``landmarks68`` are optional there.
    ``whole`` (a ``whole_image.WholeImageTopology``, MediaPipe's by default) is what
    ``--render_scope image`` extends the face with; a mesh without one renders faces only.
    """

    def __init__(self, triangles, mirror=None, landmarks68=None, device="cpu", whole=None,
                 face_triangles: int | None = None):
        self.triangles = torch.as_tensor(triangles, dtype=torch.int64, device=device)
        self.mirror = None if mirror is None else torch.as_tensor(mirror, device=device).long()
        self.landmarks68 = (None if landmarks68 is None
                            else torch.as_tensor(landmarks68, device=device).long())
        self.whole = whole
        # triangles [0, face_triangles) are the face's; the rest (if any) its extension
        self.face_triangles = len(self.triangles) if face_triangles is None else face_triangles
        self._whole_mesh = None
        self._still = None

    @property
    def still_faces(self) -> torch.Tensor | None:
        """(F,) bool: the triangles of a whole-image mesh that never move (all three corners
        static background anchors), None for a face mesh. Their pixels are the photo's own,
        copied rather than resampled."""
        if self.whole is None or self.face_triangles == len(self.triangles):
            return None
        if self._still is None:
            static = torch.as_tensor(self.whole.weights == 0, device=self.triangles.device)
            self._still = static[self.triangles].all(1)
        return self._still

    @classmethod
    def mediapipe(cls, device="cpu") -> FaceMesh:
        from face3d.topology import load_topology

        t = load_topology()
        triangles = np.concatenate([t["triangles"], t["fill_triangles"]])
        return cls(triangles, t["mirror"], t["landmarks68"], device,
                   whole=whole_image.mediapipe_topology())

    def whole_image(self) -> FaceMesh:
        """The face plus its whole-image extension (face vertices and triangles first, so
        landmark indices and face triangle ids are unchanged); built once per mesh."""
        if self.whole is None:
            raise ValueError("--render_scope image needs a mesh with a face oval (the "
                             "MediaPipe mesh); use --render_scope face with this mesh")
        if self.face_triangles < len(self.triangles):
            return self  # already extended
        if self._whole_mesh is None:
            dev = self.triangles.device
            tri = torch.cat([self.triangles, torch.as_tensor(self.whole.triangles, device=dev)])
            self._whole_mesh = FaceMesh(tri, self.whole.mirror, self.landmarks68, dev,
                                        self.whole, face_triangles=len(self.triangles))
        return self._whole_mesh

    def to(self, device) -> FaceMesh:
        """This topology on ``device``; itself when it is already there, so that per-mesh
        work cached by the rasteriser (the face-range check) is not repeated."""
        triangles = self.triangles.to(device)
        if triangles is self.triangles:
            return self
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return FaceMesh(triangles, move(self.mirror), move(self.landmarks68),
                        device=triangles.device, whole=self.whole,
                        face_triangles=self.face_triangles)


@dataclass
class Rendered:
    image: torch.Tensor   # (B, 3, H, W) texture where covered, 0 elsewhere
    mask: torch.Tensor    # (B, 1, H, W) float: pixel covered by the mesh
    hidden: torch.Tensor  # (B, 1, H, W) float: covered, but hidden in the source view
    filled: torch.Tensor  # (B, 1, H, W) float: hidden pixels repaired by the symmetry fill
    fragments: Fragments
    outside: torch.Tensor  # (B, 1, H, W) float: covered, but from outside the source image
    # (B, 1, H, W) float: ``_stretched`` (from the source to this view) maximum ``outside``,
    # when the compiled kernel made it on the way (whole-image meshes); None otherwise
    stretched: torch.Tensor | None = None


# ---------------------------------------------------------------------------- pose control
def rotate_vertices(vertices, rotation, scale, translation, yaw, pitch, roll=None):
    """Turn each face to (yaw, pitch) in degrees about the head's centre, keeping its shape,
    scale, image position and (unless given) its roll.

    ``vertices ~= scale * X @ rotation^T + translation`` defines the face's own shape X in
    the canonical frame; the result is ``scale * X @ R(yaw, pitch, roll)^T + translation``.
    Shapes: vertices (B, V, 3), rotation (B, 3, 3), scale (B,), translation (B, 3),
    yaw/pitch/roll (B,).
    """
    if roll is None:
        # roll of R = Rz(roll) Ry(yaw) Rx(pitch): atan2(R[1,0], R[0,0])
        roll = torch.rad2deg(torch.atan2(rotation[:, 1, 0], rotation[:, 0, 0]))
    shape = (vertices - translation[:, None]) @ rotation / scale[:, None, None]
    like = dict(device=vertices.device, dtype=vertices.dtype)  # poses may come from the CPU
    target = euler_to_matrix(yaw.to(**like), pitch.to(**like), roll.to(**like))
    return scale[:, None, None] * shape @ target.transpose(1, 2) + translation[:, None]


def sample_target_poses(yaw, pitch, generator: torch.Generator, pose_noise: bool = False,
                        large_pose: bool = False, pitch_noise: float = math.degrees(0.5)):
    """Random target poses for training (degrees), as in the original: the yaw turns by
    20-55 degrees (55-60 with ``large_pose``) to a random side, to the other side when that
    would pass +-90; with ``pose_noise`` the pitch also moves by up to +-``pitch_noise``.
    A pure function of its inputs and ``generator``'s state (CPU generator)."""
    n = yaw.shape[0]
    lo, hi = (55.0, 60.0) if large_pose else (20.0, 55.0)
    mag = lo + (hi - lo) * torch.rand(n, generator=generator, dtype=torch.float64)
    side = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0).double()
    yaw = yaw.detach().double().cpu()
    target = yaw + side * mag
    target = torch.where(target.abs() > 90.0, yaw - side * mag, target).clamp(-90.0, 90.0)
    jitter = (2 * torch.rand(n, generator=generator, dtype=torch.float64) - 1) * pitch_noise
    new_pitch = pitch.detach().double().cpu() + (jitter if pose_noise else 0.0)
    return target.float(), new_pitch.clamp(-90.0, 90.0).float()


# -------------------------------------------------------------------------------- texturing
def _grid(xy, height, width):
    """Pixel coordinates (B, H, W, 2) -> grid_sample's [-1, 1] (align_corners=False)."""
    return torch.stack([xy[..., 0] / width * 2 - 1, xy[..., 1] / height * 2 - 1], -1)


def _sample(image, xy):
    return F.grid_sample(image, _grid(xy, image.shape[-2], image.shape[-1]), mode="bilinear",
                         padding_mode="border", align_corners=False)


class _Covered:
    """The pixels of a view to do per-pixel work on, flattened: per-vertex attributes are
    interpolated there with the same arithmetic as ``rasterizer.interpolate`` (so to the
    same values), images are sampled there with ``grid_sample``, and results are scattered
    back into (B, ., H, W) images.

    Two strategies, as in the rasteriser (``rasterizer.default_strategy``). Compact (CPU):
    only the covered pixels (a third of a typical crop), sampled on a packed grid in which
    each image's covered pixels fill a row of ``width`` slots. Dense (GPU): every pixel, so
    that nothing waits for the host to learn how many pixels are covered; the values at
    uncovered pixels are computed and then zeroed."""

    def __init__(self, frags: Fragments, tri, num_verts: int):
        B, H, W = frags.face_ids.shape
        self.shape = (B, H, W)
        device = frags.face_ids.device
        self.dense = rasterizer.default_strategy(device) == "dense"
        if self.dense:
            self.pix = torch.arange(B * H * W, device=device)
            self.covered = frags.mask.view(-1)
            faces = frags.face_ids.view(-1).clamp_min(0)
            self.bary = frags.bary.view(-1, 3)
        else:
            self.pix = frags.mask.view(-1).nonzero().squeeze(1)
            # (index_select: the same gather as tensor[index], several times faster on CPU)
            faces = frags.face_ids.view(-1).index_select(0, self.pix)
            self.bary = frags.bary.view(-1, 3).index_select(0, self.pix)
        self.batch = torch.div(self.pix, H * W, rounding_mode="floor")
        tri = tri.to(faces.device)
        self.corners = tri.index_select(0, faces) + (self.batch * num_verts)[:, None]
        if not self.dense:
            counts = torch.bincount(self.batch, minlength=B)
            self.width = max(int(counts.max()), 1) if B else 1
            first = counts.cumsum(0) - counts
            self.slot = (torch.arange(self.pix.numel(), device=self.pix.device)
                         - first[self.batch] + self.batch * self.width)

    def at(self, attrs):
        """(B, V, C) per-vertex attributes -> (P, C) at the pixels."""
        a = attrs.reshape(-1, attrs.shape[-1]).to(torch.promote_types(attrs.dtype, torch.float32))
        g = a.index_select(0, self.corners.view(-1)).view(-1, 3, a.shape[1])
        w = self.bary.to(a.dtype)
        return g[:, 0] * w[:, 0:1] + g[:, 1] * w[:, 1:2] + g[:, 2] * w[:, 2:3]

    def sample(self, image, xy):
        """(P, C) bilinear samples of each pixel's own image (B, C, H, W) at the pixel
        coordinates ``xy`` (P, 2)."""
        B, C, H, W = image.shape
        grid = _grid(xy.to(image.dtype), H, W)
        if self.dense:
            out = F.grid_sample(image, grid.view(B, 1, -1, 2), mode="bilinear",
                                padding_mode="border", align_corners=False)
            return out.view(B, C, -1).transpose(1, 2).reshape(-1, C)
        packed = image.new_zeros(B * self.width, 2)
        packed[self.slot] = grid
        out = F.grid_sample(image, packed.view(B, 1, self.width, 2), mode="bilinear",
                            padding_mode="border", align_corners=False)
        return out.view(B, C, self.width).transpose(1, 2).reshape(-1, C).index_select(0, self.slot)

    def image(self, values):
        """(P, C) -> (B, C, H, W), zero at the pixels not covered."""
        B, H, W = self.shape
        if self.dense:
            values = values.masked_fill(~self.covered[:, None], 0)
            return values.view(B, H, W, -1).permute(0, 3, 1, 2).contiguous()
        out = values.new_zeros(B, values.shape[1], H * W)
        out[self.batch, :, self.pix - self.batch * (H * W)] = values
        return out.view(B, values.shape[1], H, W)  # (not -1: an empty batch has no size)


def rasterize_views(triangles, height, width, *views, scratch: str | None = None):
    """Fragments of several (B, V, 3) views of the same meshes, rasterised in one call (the
    images of a batch are independent, so this equals one call per view, with half the
    kernel launches for two views). ``scratch``: see ``rasterize``'s ``_scratch``."""
    frags = rasterize(torch.cat(views), triangles, height, width, _scratch=scratch)
    bounds = np.cumsum([0] + [v.shape[0] for v in views])
    return [Fragments(**{k: v[a:b] for k, v in vars(frags).items()})
            for a, b in zip(bounds[:-1], bounds[1:])]


def _outside(point, height: int, width: int):
    """Is each point (P, >= 2: x, y) outside the image? Its texture is the image's edge
    pixels, repeated by the lookup's border padding: made up, not seen."""
    x, y = point[:, 0], point[:, 1]
    return (x < 0) | (x > width) | (y < 0) | (y > height)


def _visible_in(src: Fragments, batch, point, tol, outside=None):
    """Is each surface point (P, 3: x, y, z in the source view, of image ``batch``) seen in
    the source view? It is when, at any of the 4 pixels around it (the footprint of the
    bilinear texture lookup), the source's z-buffer is not nearer than the point. A single
    nearest pixel flags isolated false 'hidden' texels on steep surfaces (nose, cheeks).
    Points flagged ``outside`` the source image (``_outside``) count as visible: nothing
    in the photo hides them (their texture is made up all the same)."""
    B, H, W = src.face_ids.shape
    x0 = (point[:, 0] - 0.5).floor().long()
    y0 = (point[:, 1] - 0.5).floor().long()
    z = point[:, 2] - tol.index_select(0, batch)
    cols = torch.stack([x0, x0 + 1]).clamp_(0, W - 1)
    rows = (torch.stack([y0, y0 + 1]).clamp_(0, H - 1) + batch * H) * W
    at = (rows[:, None] + cols[None]).view(-1)  # the 4 pixels, as 4 rows of P
    covered = src.mask.view(-1).index_select(0, at).view(4, -1)
    nearest = src.depth.view(-1).index_select(0, at).view(4, -1)
    seen = (covered & (z <= nearest)).any(0)
    return seen if outside is None else seen | outside


def depth_tolerance(vertices, num_face_vertices: int | None = None):
    """Per-face z-test slack: 3% of the face's width (at least 1 px), which absorbs the
    nearest-pixel lookup of the depth buffer on steep surfaces. The width is that of the
    first ``num_face_vertices`` vertices (the face of a whole-image mesh), else of all."""
    vertices = vertices[:, :num_face_vertices]
    width = vertices[..., 0].amax(1) - vertices[..., 0].amin(1)
    return (0.03 * width).clamp(min=1.0)


def render_textured(src_image, src_vertices, dst_vertices, mesh: FaceMesh,
                    src_fragments: Fragments | None = None,
                    dst_fragments: Fragments | None = None, per_vertex: bool = False,
                    symmetric_fill: bool = False, tolerance=None, *,
                    _scratch: str | None = None) -> Rendered:
    """Render the mesh at ``dst_vertices`` with the texture of ``src_image`` seen at
    ``src_vertices`` (same vertex order). Output has the source image's size. Pass the
    fragments of either view when they are already rasterised, and the z-test slack
    ``tolerance`` (B,) when known (``depth_tolerance`` of the source view). Pixels of the
    mesh's ``still_faces`` (whole-image background, the same in both views) are copied
    from the source image: exact, and no per-pixel work.

    With the numba rasteriser strategy (the CPU default) and float32 inputs, the per-pixel
    work is one compiled pass (render/texture_numba.py), with the same result as the
    PyTorch path below. ``_scratch`` (internal: callers that hand out neither): its image
    and outside are then this thread's reusable buffers of that name."""
    B, _, H, W = src_image.shape
    tri = mesh.triangles
    if symmetric_fill and mesh.mirror is None:
        raise ValueError("symmetric_fill needs a mesh with a mirror pairing")
    if _fused(src_image, src_vertices):
        # The compiled pass needs only the source view's depth and coverage, which never
        # leave this call: this thread's reusable buffers (no fresh pages per call).
        dst = dst_fragments if dst_fragments is not None else rasterize(dst_vertices, tri, H, W)
        src = ((src_fragments.depth, src_fragments.mask) if src_fragments is not None
               else rasterize_depth(src_vertices, tri, H, W, _scratch="render_textured.src"))
        tol = _tolerance(src_vertices, mesh) if tolerance is None else tolerance
        return _render_fused(src_image, src_vertices, dst_vertices, mesh, src, dst, tol,
                             per_vertex, symmetric_fill, _scratch)
    if dst_fragments is None and src_fragments is None:
        dst, src = rasterize_views(tri, H, W, dst_vertices, src_vertices)
    else:
        dst = dst_fragments if dst_fragments is not None else rasterize(dst_vertices, tri, H, W)
        src = src_fragments if src_fragments is not None else rasterize(src_vertices, tri, H, W)
    tol = _tolerance(src_vertices, mesh) if tolerance is None else tolerance
    still = None if mesh.still_faces is None else (
        dst.mask & mesh.still_faces[dst.face_ids.clamp_min(0)])
    moving = dst if still is None else Fragments(dst.face_ids, dst.bary, dst.depth,
                                                 dst.mask & ~still)
    cov = _Covered(moving, tri, src_vertices.shape[1])
    point = cov.at(src_vertices)  # (P, 3): where each covered pixel was in the source view
    outside = _outside(point, H, W)
    hidden = ~_visible_in(src, cov.batch, point, tol, outside)
    if per_vertex:
        colours = _sample(src_image, src_vertices[:, None, :, :2])[:, :, 0].transpose(1, 2)
        colour = cov.at(colours)
    else:
        colour = cov.sample(src_image, point[:, :2])
    filled = torch.zeros_like(hidden)
    if symmetric_fill:
        twin = cov.at(src_vertices[:, mesh.mirror])
        filled = hidden & _visible_in(src, cov.batch, twin, tol) & ~_outside(twin, H, W)
        colour = torch.where(filled[:, None], cov.sample(src_image, twin[:, :2]), colour)
    dtype = colour.dtype
    image = cov.image(colour)
    if still is not None:
        image = torch.where(still[:, None], src_image.to(dtype), image)
    return Rendered(image, dst.mask[:, None].to(dtype),
                    cov.image(hidden[:, None].to(dtype)), cov.image(filled[:, None].to(dtype)),
                    dst, cov.image(outside[:, None].to(dtype)))


def _compiled(tensor, dtype=None) -> bool:
    """Whether the masks of ``tensor``'s device (in ``dtype``, default its own) are made by
    render/texture_numba.py's compiled passes: the numba strategy, float32 or float64."""
    dtype = tensor.dtype if dtype is None else dtype
    return (rasterizer.default_strategy(tensor.device) == "numba" and not tensor.requires_grad
            and dtype in (torch.float32, torch.float64))


def _zeros_like(tensor):
    """``torch.zeros_like``; on the numba path from numpy (calloc'd pages), so that no
    PyTorch worker thread is woken to fill it: after a parallel op those threads spin for
    a while, competing with the compiled kernels' threads for the cores (with 2 threads,
    the renders ran 10-30 % faster with ``OMP_WAIT_POLICY=PASSIVE``)."""
    if _compiled(tensor) and tensor.is_contiguous():
        return torch.from_numpy(np.zeros(tuple(tensor.shape), _NUMPY[tensor.dtype]))
    return torch.zeros_like(tensor)


_NUMPY = {torch.float32: np.float32, torch.float64: np.float64}


def _fused(src_image, src_vertices) -> bool:
    """Whether ``render_textured`` runs the compiled per-pixel kernel
    (render/texture_numba.py): with the numba rasteriser strategy, on float32 CPU inputs
    (anything else, malformed input included, takes the PyTorch path, whose rasteriser
    says what is wrong)."""
    if (not isinstance(src_vertices, torch.Tensor)
            or rasterizer.default_strategy(src_vertices.device) != "numba"):
        return False
    from render import texture_numba

    return texture_numba.supported(src_image, src_vertices)


def _render_fused(src_image, src_vertices, dst_vertices, mesh: FaceMesh, src,
                  dst: Fragments, tol, per_vertex: bool, symmetric_fill: bool,
                  scratch: str | None = None) -> Rendered:
    """``render_textured``'s per-pixel work in one compiled pass, with the stretched mask
    of a whole-image mesh on the way; the same results as the PyTorch path (see
    render/texture_numba.py for how exactly). ``src``: the source view's (depth, mask)."""
    from render import texture_numba

    colours = None
    if per_vertex:
        colours = _sample(src_image, src_vertices[:, None, :, :2])[:, :, 0].transpose(1, 2)
    whole = mesh.face_triangles < len(mesh.triangles)
    out = texture_numba.texture_view(
        dst, *src, mesh.triangles, src_vertices, src_image, tol, still=mesh.still_faces,
        mirror=mesh.mirror if symmetric_fill else None, vertex_colours=colours,
        dst_vertices=dst_vertices if whole else None,
        stretch_factor=whole_image.STRETCH_FACTOR, scratch=scratch)
    return Rendered(out["image"], out["coverage"], out["hidden"], out["filled"], dst,
                    out["outside"], out["stretched"])


def _tolerance(src_vertices, mesh: FaceMesh):
    """``depth_tolerance`` of a source view of ``mesh`` (over the face's vertices)."""
    return depth_tolerance(src_vertices, None if mesh.whole is None else
                           mesh.whole.num_face_vertices)


# ----------------------------------------------------------------------- masks, background
def erode(mask, kernel: int):
    """Binary erosion of a (B, 1, H, W) float mask by a square ``kernel`` (odd, px); pixels
    outside the image count as inside the mask (as a min-pool ignoring padding would).

    Counts the uncovered pixels in each window with two running sums, exact in float32
    (every partial sum is an integer below 2**24): several times faster on CPU than
    ``max_pool2d``, whose cost grows with kernel**2."""
    if kernel <= 1:
        return mask
    if _compiled(mask):
        from render import texture_numba

        return texture_numba.erode(mask, kernel)
    k = kernel | 1
    r = k // 2
    exact = k * (max(mask.shape[-2:]) + k) < 1 << 24
    holes = F.pad((mask <= 0).to(torch.float32 if exact else torch.float64), (r + 1, r, r + 1, r))
    c = holes.cumsum(3)
    c = c[..., k:] - c[..., :-k]
    c = c.cumsum(2)
    c = c[..., k:, :] - c[..., :-k, :]
    return (c == 0).to(mask.dtype)


def background_colour(image, mask, mode: str):
    """(B, 3, 1, 1) fill for pixels outside the face: the face's mean colour ('avg', the
    original's avg_BG) or mid-grey ('grey')."""
    if mode == "grey":
        return torch.zeros(image.shape[0], 3, 1, 1, dtype=image.dtype, device=image.device)
    if mode != "avg":
        raise ValueError(f"unknown background mode {mode!r}; choose avg or grey")
    # Summed in float64: float32 sums of this size depend (in the last bits) on how the
    # reduction is split, which depends on the batch size; this keeps samples independent.
    area = mask.sum((2, 3), keepdim=True, dtype=torch.float64).clamp(min=1.0)
    total = (image * mask).sum((2, 3), keepdim=True, dtype=torch.float64)
    return (total / area).to(image.dtype)


def composite(render: Rendered, mask, background):
    """``image * mask + background * (1 - mask)``, in one pass (exact where mask is 0 or 1);
    on the numba path a compiled pass with ``torch.lerp``'s rounding, bit for bit."""
    image = render.image
    if (_compiled(image) and image.dtype == mask.dtype == background.dtype == torch.float32
            and image.ndim == 4 and mask.shape == (image.shape[0], 1, *image.shape[2:])
            and background.shape == (*image.shape[:2], 1, 1) and not mask.requires_grad
            and not background.requires_grad):
        from render import texture_numba

        if texture_numba.lerp_fuses() is not None:
            return texture_numba.composite(image, mask, background)
    return torch.lerp(background.expand_as(image), image, mask)


# ------------------------------------------------------------------------ the two products
def _whole_image_views(vertices, rotation, scale, translation, yaw, pitch, mesh: FaceMesh,
                       settings: RenderSettings, size: int):
    """(whole-image mesh, its vertices at the source pose, at the target pose)."""
    whole, src = _source_vertices(vertices, rotation, scale, translation, mesh, settings, size)
    dst = whole_image.rotate_whole(src, rotation, scale, translation, yaw, pitch, whole.whole)
    return whole, src, dst


def _face_region(frags: Fragments, mesh: FaceMesh, dtype, erode_kernel: int = 0):
    """(B, 1, H, W): pixels drawn by the face's own triangles (not its extension), eroded
    by ``erode_kernel`` (in one compiled pass on the numba path)."""
    if erode_kernel > 1 and _compiled(frags.face_ids, dtype):  # (else torch is as fast)
        from render import texture_numba

        return texture_numba.face_mask(frags, mesh.face_triangles, erode_kernel, dtype)
    region = (frags.mask & (frags.face_ids < mesh.face_triangles))[:, None].to(dtype)
    return erode(region, erode_kernel)


def _stretched(frags: Fragments, mesh: FaceMesh, from_vertices, to_vertices, dtype):
    """(B, 1, H, W): pixels whose triangle's screen area grew more than
    ``whole_image.STRETCH_FACTOR`` times from ``from_vertices`` (where the texture came
    from) to ``to_vertices`` (this view): hair or background revealed behind a turning
    head, which the render can only smear."""
    ratio = whole_image.stretch_ratio(from_vertices, to_vertices, mesh.triangles)
    B, H, W = frags.face_ids.shape
    at = torch.gather(ratio, 1, frags.face_ids.view(B, -1).clamp_min(0)).view(B, 1, H, W)
    return ((at > whole_image.STRETCH_FACTOR) & frags.mask[:, None]).to(dtype)


def scope_problems(image, vertices, rotation, scale, translation, mesh: FaceMesh,
                   settings: RenderSettings) -> list[str]:
    """Per photo of a batch, '' when it can be rendered in ``settings.render_scope``, else
    a one-line reason (a whole-image mesh that folds at the source pose: a profile or a bad
    fit). Callers report such photos and go on; the face scope takes every photo."""
    if settings.render_scope != "image":
        return [""] * vertices.shape[0]
    whole, src = _source_vertices(vertices, rotation, scale, translation, mesh, settings,
                                  image.shape[-1])
    return whole_image.check_source(src, image.shape[-1], whole.whole)


@dataclass
class SourceView:
    """A batch of photos prepared as the texture source of rotated views: everything about
    the source pose that does not depend on the target pose, computed once per photo and
    reused for every pose (``source_view`` makes one; ``rotated_view(..., source=)`` and
    :meth:`rotated_view` use it). The same results as recomputing it per view.

    image, vertices, rotation, scale, translation: the photos and their fits, as given;
    mesh: the mesh drawn (the whole-image mesh for render_scope 'image');
    drawn_vertices: its vertices at the source pose; fragments: their raster;
    tolerance: the z-test slack (B,); face_region: (B, 1, H, W) the face's own pixels;
    background: (B, 3, 1, 1) the fill; render_scope, background_mode: what it was made for.
    """

    image: torch.Tensor
    vertices: torch.Tensor
    rotation: torch.Tensor
    scale: torch.Tensor
    translation: torch.Tensor
    mesh: FaceMesh
    drawn_vertices: torch.Tensor
    fragments: Fragments
    tolerance: torch.Tensor
    face_region: torch.Tensor
    background: torch.Tensor
    render_scope: str
    background_mode: str

    def select(self, index) -> SourceView:
        """The source view of photos ``index`` (a 1-D index tensor; repeats allowed), e.g.
        one row per (photo, pose) of a pose sweep."""
        take = lambda t: t.index_select(0, index.to(t.device))  # noqa: E731
        frags = Fragments(*(take(getattr(self.fragments, k))
                            for k in ("face_ids", "bary", "depth", "mask")))
        return SourceView(take(self.image), take(self.vertices), take(self.rotation),
                          take(self.scale), take(self.translation), self.mesh,
                          take(self.drawn_vertices), frags, take(self.tolerance),
                          take(self.face_region), take(self.background), self.render_scope,
                          self.background_mode)

    def rotated_view(self, yaw, pitch, settings: RenderSettings | None = None,
                     per_vertex: bool = False) -> dict:
        """``rotated_view`` of these photos turned to (yaw, pitch) (B,), from this view."""
        return rotated_view(self.image, self.vertices, self.rotation, self.scale,
                            self.translation, yaw, pitch, self.mesh, settings, per_vertex,
                            source=self)


def source_view(image, vertices, rotation, scale, translation, mesh: FaceMesh,
                settings: RenderSettings | None = None) -> SourceView:
    """The photos (as ``rotated_view`` takes them) prepared once as the source of any
    number of rotated views with ``settings`` (its render_scope and background count;
    default as ``rotated_view``'s)."""
    settings = RenderSettings(erode_kernel=0) if settings is None else settings
    drawn, src_v = _source_vertices(vertices, rotation, scale, translation, mesh, settings,
                                    image.shape[-1])
    frags = rasterize(src_v, drawn.triangles, *image.shape[-2:])
    return _source(image, vertices, rotation, scale, translation, drawn, src_v, frags,
                   settings)


def _source_vertices(vertices, rotation, scale, translation, mesh: FaceMesh,
                     settings: RenderSettings, size: int):
    """(the mesh drawn for ``settings``' scope, its vertices at the source pose)."""
    if settings.render_scope != "image":
        return mesh, vertices
    drawn = mesh.whole_image()
    return drawn, whole_image.extend_vertices(
        whole_image.flatten(vertices, translation, settings.face_depth), rotation, scale,
        translation, size, drawn.whole)


def _source(image, vertices, rotation, scale, translation, drawn: FaceMesh, src_v,
            frags: Fragments, settings: RenderSettings) -> SourceView:
    region = _face_region(frags, drawn, image.dtype)
    return SourceView(image, vertices, rotation, scale, translation, drawn, src_v, frags,
                      _tolerance(src_v, drawn), region,
                      background_colour(image, region, settings.background),
                      settings.render_scope, settings.background)


def _target_vertices(scope: str, drawn: FaceMesh, src_v, vertices, rotation, scale,
                     translation, yaw, pitch):
    """The drawn mesh's vertices (``src_v`` at the source pose) turned to (yaw, pitch)."""
    if scope == "image":
        return whole_image.rotate_whole(src_v, rotation, scale, translation, yaw, pitch,
                                        drawn.whole)
    return rotate_vertices(vertices, rotation, scale, translation, yaw, pitch)


def rotated_view(image, vertices, rotation, scale, translation, yaw, pitch, mesh: FaceMesh,
                 settings: RenderSettings | None = None, per_vertex: bool = False,
                 source: SourceView | None = None) -> dict:
    """Test time: the photo turned to (yaw, pitch), rendered with the photo's texture:
    the face alone on the background fill (``render_scope`` 'face', the original's), or
    the whole crop (``render_scope`` 'image', see ``render.whole_image``). ``settings``
    defaults to no erosion (a view shows the whole rendered face). ``source``: the photos'
    ``source_view`` made for these settings, to render many poses of one batch without
    redoing the source pose's work (then the photo arguments are the source's; the result
    is the same).

    Returns image, mask (the eroded face region), hidden, filled, stretched (texture the
    render had to make up: pixels of triangles grown past the stretch factor, or whose
    surface lay outside the source crop; none for 'face'), coverage (pixels the mesh
    covers), vertices (the face's) and landmarks (B, 68, 2)."""
    settings = RenderSettings(erode_kernel=0) if settings is None else settings
    H, W = image.shape[-2:] if source is None else source.image.shape[-2:]
    if source is None:  # both views in one rasteriser call (half the launches on a GPU)
        drawn, src_v = _source_vertices(vertices, rotation, scale, translation, mesh,
                                        settings, W)
        dst = _target_vertices(settings.render_scope, drawn, src_v, vertices, rotation,
                               scale, translation, yaw, pitch)
        # (the fragments never leave this function: this thread's reusable buffers)
        src_frags, dst_frags = rasterize_views(drawn.triangles, H, W, src_v, dst,
                                               scratch="rotated_view")
        source = _source(image, vertices, rotation, scale, translation, drawn, src_v,
                         src_frags, settings)
    elif (source.render_scope, source.background_mode) != (settings.render_scope,
                                                           settings.background):
        raise ValueError(f"rotated_view: the source view was made for render_scope "
                         f"{source.render_scope!r}, background {source.background_mode!r}, "
                         f"not {settings.render_scope!r}, {settings.background!r}")
    else:
        dst = _target_vertices(source.render_scope, source.mesh, source.drawn_vertices,
                               source.vertices, source.rotation, source.scale,
                               source.translation, yaw, pitch)
        dst_frags = rasterize(dst, source.mesh.triangles, H, W, _scratch="rotated_view")
    sv = source
    drawn, src_v = sv.mesh, sv.drawn_vertices
    r = render_textured(sv.image, src_v, dst, drawn, src_fragments=sv.fragments,
                        dst_fragments=dst_frags, per_vertex=per_vertex,
                        symmetric_fill=settings.symmetric_fill, tolerance=sv.tolerance,
                        _scratch="rotated_view")
    mask = _face_region(dst_frags, drawn, sv.image.dtype, settings.erode_kernel)
    if settings.render_scope == "image":  # the face region is part of the picture
        shown = r.mask
        stretched = _stretched_of(r, dst_frags, drawn, src_v, dst, sv.image.dtype)
    else:
        shown, stretched = mask, _zeros_like(r.mask)
    n = sv.vertices.shape[1]
    return dict(image=composite(r, shown, sv.background), mask=mask, hidden=r.hidden,
                filled=r.filled, stretched=stretched, coverage=r.mask, vertices=dst[:, :n],
                landmarks=_landmarks(dst, mesh))


def _stretched_of(r: Rendered, frags: Fragments, mesh: FaceMesh, from_vertices, to_vertices,
                  dtype):
    """The stretched mask of a whole-image render (``_stretched`` or ``outside``): made by
    the compiled kernel when it ran, else here."""
    if r.stretched is not None:
        return r.stretched.to(dtype)
    return _stretched(frags, mesh, from_vertices, to_vertices, dtype).maximum(r.outside)


def training_pair(image, vertices, rotation, scale, translation, yaw_b, pitch_b,
                  mesh: FaceMesh, settings: RenderSettings | None = None) -> dict:
    """The self-supervised pair of the paper for a batch of aligned photos at pose a
    (``settings`` defaults to the training defaults, ``RenderSettings()``).

    Rotate a->b with the photo's texture, re-texture the mesh from that render, rotate back
    to a. With ``render_scope`` 'image' the whole crop is rotated (``render.whole_image``)
    and the artifacts are exactly those of a real whole-image rotation. Returns:
      input:        the a->b->a render with artifacts (with 'face', background-filled
                    outside the eroded face mask) -- the generator's input;
      real:         the photo (the generator's target);
      mask:         the eroded face mask at a; hidden_b: pixels at a whose surface was hidden
                    at b (where the artifacts are); stretched: pixels at a whose triangle
                    is more than the stretch factor larger than at b (smeared from b's
                    render; none for 'face');
      rotated:      the a->b render, for the rotated-mesh GAN step; stretched_b its
                    stretched pixels;
      mask_b, landmarks_a, landmarks_b (B, 68, 2), vertices_b (the face's).
    """
    settings = RenderSettings() if settings is None else settings
    H, W = image.shape[-2:]
    n = vertices.shape[1]
    whole = settings.render_scope == "image"
    if whole:
        drawn, verts_a, verts_b = _whole_image_views(vertices, rotation, scale, translation,
                                                     yaw_b, pitch_b, mesh, settings, W)
    else:
        drawn, verts_a = mesh, vertices
        verts_b = rotate_vertices(vertices, rotation, scale, translation, yaw_b, pitch_b)
    # (the fragments never leave this function: this thread's reusable buffers)
    frags_a, frags_b = rasterize_views(drawn.triangles, H, W, verts_a, verts_b,
                                       scratch="training_pair")
    region_a = _face_region(frags_a, drawn, image.dtype)
    bg = background_colour(image, region_a, settings.background)
    to_b = render_textured(image, verts_a, verts_b, drawn, src_fragments=frags_a,
                           dst_fragments=frags_b, symmetric_fill=settings.symmetric_fill,
                           _scratch="training_pair.to_b")
    mask_b = _face_region(frags_b, drawn, image.dtype, settings.erode_kernel)
    rotated = composite(to_b, to_b.mask if whole else mask_b, bg)
    # Re-texture from the render at b, render back at a (the geometry of a is the source
    # view we already rasterised, so only b's raster is new). Outside b's silhouette the
    # texture is the background colour, not 0, so bilinear lookups at the silhouette do
    # not pull a dark seam into the face.
    back = render_textured(composite(to_b, to_b.mask, bg), verts_b, verts_a, drawn,
                           src_fragments=to_b.fragments, dst_fragments=frags_a,
                           symmetric_fill=settings.symmetric_fill,
                           _scratch="training_pair.back")
    mask_a = erode(region_a, settings.erode_kernel)
    if whole:
        shown = back.mask
        stretched = _stretched_of(back, frags_a, drawn, verts_b, verts_a, image.dtype)
        stretched_b = _stretched_of(to_b, frags_b, drawn, verts_a, verts_b, image.dtype)
        hidden_b = back.hidden
    else:
        shown, stretched, stretched_b = mask_a, _zeros_like(mask_a), _zeros_like(mask_b)
        hidden_b = back.hidden * mask_a
    return dict(input=composite(back, shown, bg), real=image, mask=mask_a,
                hidden_b=hidden_b, stretched=stretched, rotated=rotated, mask_b=mask_b,
                stretched_b=stretched_b, landmarks_a=_landmarks(vertices, mesh),
                landmarks_b=_landmarks(verts_b, mesh), vertices_b=verts_b[:, :n])


def _landmarks(vertices, mesh: FaceMesh):
    if mesh.landmarks68 is None:
        return None
    return vertices[:, mesh.landmarks68, :2]
