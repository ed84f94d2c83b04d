"""The compiled per-pixel texturing (render/texture_numba.py) against the PyTorch path, and
the per-photo source view (``renderer.source_view``).

What a user relies on: switching the CPU default (numba) for the reference path changes no
pixel of any render, mask or training pair, on real fits, in both scopes, at any pose and
batch; odd inputs (source points outside the crop, nothing covered, NaN vertices, an empty
batch) give the documented result on both paths; and a source view prepared once per photo
renders every pose exactly as recomputing it would.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from fitted_faces import CROP, batch_of

from render import rasterizer, renderer, whole_image
from render.renderer import (
    FaceMesh,
    render_textured,
    rotate_vertices,
    rotated_view,
    source_view,
    training_pair,
)
from render.settings import RenderSettings

texture_numba = pytest.importorskip("render.texture_numba")  # needs numba

YAWS = [-60.0, -25.0, 0.0, 40.0]


def _with(monkeypatch, strategy, fn):
    with monkeypatch.context() as m:
        m.setattr(rasterizer, "default_strategy", lambda device: strategy)
        return fn()


@pytest.fixture
def fused_calls(monkeypatch):
    """How many times the compiled kernel ran (so a silent fallback cannot pass)."""
    calls = []
    real = texture_numba.texture_view

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(texture_numba, "texture_view", spy)
    return calls


def _assert_same(a: dict, b: dict, what: str):
    for k, v in a.items():
        if torch.is_tensor(v):
            assert torch.equal(v, b[k]), f"{what}: {k} differs"


def _batch(faces):
    """Both example photos, each at every yaw of YAWS (batch 8)."""
    b = batch_of([faces["astronaut"], faces["grace_hopper"]])
    idx = torch.arange(2).repeat_interleave(len(YAWS))
    args = [b[k].index_select(0, idx)
            for k in ("image", "vertices", "rotation", "scale", "translation")]
    return args, torch.tensor(YAWS * 2), b["pitch"].index_select(0, idx)


@pytest.mark.parametrize("scope", ["face", "image"])
@pytest.mark.parametrize("fill", [False, True])
def test_views_and_pairs_equal_the_torch_path(faces, mesh, monkeypatch, fused_calls, scope,
                                              fill):
    args, yaw, pitch = _batch(faces)
    settings = RenderSettings(render_scope=scope, symmetric_fill=fill, erode_kernel=5)
    for name, fn in (
            ("rotated_view", lambda: rotated_view(*args, yaw, pitch, mesh, settings)),
            ("per-vertex view", lambda: rotated_view(*args, yaw, pitch, mesh, settings,
                                                     per_vertex=True)),
            ("training_pair", lambda: training_pair(*args, yaw + 30, pitch, mesh, settings))):
        fused_calls.clear()
        fused = _with(monkeypatch, "numba", fn)
        assert fused_calls, f"{name}: the compiled kernel did not run"
        reference = _with(monkeypatch, "compact", fn)
        _assert_same(fused, reference, f"{scope} {name}")
    # the renders are real: most of the crop (image) or a face (face) drawn, some hidden
    assert fused["input"].abs().sum() > 0 and reference["hidden_b"].sum() > 0


def _render_both(monkeypatch, *args, **kwargs):
    fused = _with(monkeypatch, "numba", lambda: render_textured(*args, **kwargs))
    reference = _with(monkeypatch, "compact", lambda: render_textured(*args, **kwargs))
    for k in ("image", "mask", "hidden", "filled", "outside"):
        assert torch.equal(getattr(fused, k), getattr(reference, k)), k
    return fused


def _whole_views(f, whole, yaw):
    """The whole-image mesh's vertices of fitted face ``f`` at its own pose and at ``yaw``."""
    src = whole_image.extend_vertices(whole_image.flatten(f.vertices, f.translation),
                                      f.rotation, f.scale, f.translation, CROP, whole.whole)
    dst = whole_image.rotate_whole(src, f.rotation, f.scale, f.translation,
                                   torch.tensor([yaw]), f.pitch, whole.whole)
    return src, dst


def test_whole_image_render_textured_and_its_stretched_mask(astronaut, mesh, monkeypatch):
    whole = mesh.whole_image()
    f = astronaut
    src, dst = _whole_views(f, whole, 50.0)
    r = _render_both(monkeypatch, f.image, src, dst, whole)
    from render.renderer import _stretched

    expected = _stretched(r.fragments, whole, src, dst, torch.float32).maximum(r.outside)
    assert torch.equal(r.stretched, expected)
    assert 0 < r.stretched.sum() < r.mask.sum()


def test_source_points_outside_the_crop_are_outside_not_hidden(astronaut, mesh,
                                                               monkeypatch):
    """The source view shifted half out of the crop: its points there count as outside
    (seen, nothing hides them) and their texture is the crop's edge (border padding)."""
    src = astronaut.vertices.clone()
    src[..., 0] += 0.6 * CROP
    r = _render_both(monkeypatch, astronaut.image, src, astronaut.vertices, mesh)
    out = r.outside.bool()
    assert out.any() and (r.hidden.bool() & out).sum() == 0
    assert (r.mask.bool() | ~out).all()


def test_nothing_covered_gives_zeros(astronaut, mesh, monkeypatch):
    dst = astronaut.vertices + torch.tensor([3.0 * CROP, 0.0, 0.0])
    r = _render_both(monkeypatch, astronaut.image, astronaut.vertices, dst, mesh)
    for k in ("image", "mask", "hidden", "filled", "outside"):
        assert getattr(r, k).abs().sum() == 0, k


def test_nan_vertices(astronaut, mesh, monkeypatch):
    """NaN in the target view: its triangles are not drawn. NaN in the source view (not in
    the target): the pixels whose source point is NaN are hidden (no depth test passes)
    and not outside; their colour is the texture at the crop's top-left pixel (the
    lookup clips NaN coordinates to 0), the same on both paths."""
    dst = astronaut.vertices.clone()
    dst[0, 10] = float("nan")
    drawn = _render_both(monkeypatch, astronaut.image, astronaut.vertices, dst, mesh)
    full = _render_both(monkeypatch, astronaut.image, astronaut.vertices,
                        astronaut.vertices, mesh)
    assert 0 < drawn.mask.sum() < full.mask.sum()
    src = astronaut.vertices.clone()
    src[0, 10] = float("nan")
    r = _render_both(monkeypatch, astronaut.image, src, astronaut.vertices, mesh,
                     symmetric_fill=True)
    touched = (r.fragments.mask & (mesh.triangles[r.fragments.face_ids.clamp_min(0)]
                                   == 10).any(-1))[:, None]
    assert touched.any()
    assert r.hidden.bool()[touched].all() and not r.outside.bool()[touched].any()
    corner = astronaut.image[0, :, 0, 0]
    nan_pixels = touched & ~r.filled.bool()
    assert torch.equal(r.image.permute(0, 2, 3, 1)[nan_pixels[:, 0]],
                       corner.expand(int(nan_pixels.sum()), 3))


def test_empty_batch(mesh, monkeypatch):
    image = torch.zeros(0, 3, CROP, CROP)
    verts = torch.zeros(0, mesh.triangles.max().item() + 1, 3)
    r = _render_both(monkeypatch, image, verts, verts, mesh)
    assert r.image.shape == (0, 3, CROP, CROP) and r.hidden.shape == (0, 1, CROP, CROP)


@pytest.mark.parametrize("size", [(256, 256), (37, 53)])
def test_bilinear_lookup_is_grid_sample(size):
    """The kernel's texture lookup against grid_sample itself, at random points in and
    around the image (also a size that is no power of two, where rounding shows)."""
    H, W = size
    g = torch.Generator().manual_seed(1)
    image = torch.rand(1, 3, H, W, generator=g) * 2 - 1
    xy = (torch.rand(20000, 2, generator=g) * 1.4 - 0.2) * torch.tensor([float(W), float(H)])
    grid = torch.stack([xy[:, 0] / W * 2 - 1, xy[:, 1] / H * 2 - 1], -1)
    ref = F.grid_sample(image, grid.view(1, 1, -1, 2), mode="bilinear",
                        padding_mode="border", align_corners=False).view(1, 3, -1)
    out = torch.empty(1, 3, xy.shape[0])
    texture_numba._bilinear_kernel(image.numpy(), xy.numpy(), texture_numba.grid_sample_fuses(),
                                   out.numpy())
    if texture_numba.grid_sample_exact():
        assert torch.equal(out, ref)
    else:  # the documented bound of a build the kernel cannot reproduce exactly
        assert (out - ref).abs().max() <= texture_numba.colour_tolerance(H, W)


@pytest.mark.parametrize("scope", ["face", "image"])
def test_results_do_not_share_the_reused_buffers(faces, mesh, monkeypatch, scope):
    """rotated_view and training_pair keep their fragments and texture in per-thread buffers
    that the next call overwrites: nothing they return may live there (the first call's
    results are unchanged by later calls, of both kinds, at other poses)."""
    args, yaw, pitch = _batch(faces)
    settings = RenderSettings(render_scope=scope, erode_kernel=5)
    view = lambda y: rotated_view(*args, y, pitch, mesh, settings)  # noqa: E731
    pair = lambda y: training_pair(*args, y, pitch, mesh, settings)  # noqa: E731
    first = _with(monkeypatch, "numba", lambda: (view(yaw), pair(yaw + 30)))
    kept = [{k: v.clone() for k, v in r.items() if torch.is_tensor(v)} for r in first]
    _with(monkeypatch, "numba", lambda: (view(-yaw), pair(-yaw - 30), view(yaw * 0.5)))
    for before, after in zip(kept, first):
        _assert_same(before, after, f"{scope}: a later call changed a result")
    # and none of their memory is a buffer's (also where the values happen to agree)
    from render import rasterizer_numba

    buffers = [(b.data_ptr(), b.data_ptr() + b.numel() * b.element_size())
               for b in rasterizer_numba._SCRATCH.buffers.values()]
    assert len(buffers) >= 8  # fragments and texture of both functions
    for r in first:
        for k, v in r.items():
            if torch.is_tensor(v) and v.numel():
                lo = v.untyped_storage().data_ptr()
                hi = lo + v.untyped_storage().nbytes()
                assert all(hi <= a or lo >= b for a, b in buffers), f"{k} is in a buffer"


def test_reused_buffers_are_reused_and_bounded(monkeypatch):
    from render import rasterizer_numba

    a = rasterizer_numba.scratch("test.a", (10, 3), torch.float32)
    b = rasterizer_numba.scratch("test.a", (5, 3), torch.float32)
    assert b.data_ptr() == a.data_ptr() and b.shape == (5, 3)  # the same memory
    monkeypatch.setattr(rasterizer_numba, "SCRATCH_LIMIT", 100)
    big = rasterizer_numba.scratch("test.big", (30,), torch.float32)  # 120 bytes
    assert big.shape == (30,)
    assert ("test.big", torch.float32) not in rasterizer_numba._SCRATCH.buffers  # not kept


# ------------------------------------------------------------ compiled erosion, face mask
def _torch_erode(mask, kernel, monkeypatch):
    return _with(monkeypatch, "compact", lambda: renderer.erode(mask, kernel))


@pytest.mark.parametrize("kernel", [2, 3, 5, 19, 41, 600])
@pytest.mark.parametrize("shape", [(3, 1, 64, 80), (1, 1, 7, 300), (2, 1, 1, 1), (0, 1, 5, 5)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compiled_erode_is_the_torch_erode(kernel, shape, dtype, monkeypatch):
    """Random blobs with holes of every size, NaN and negative values among them (NaN is
    not a hole, negatives are), windows from 3 px to wider than the image."""
    g = torch.Generator().manual_seed(kernel)
    mask = (torch.rand(shape, generator=g) > 0.02).to(dtype)
    if mask.numel():
        flat = mask.view(-1)
        flat[torch.randint(0, flat.numel(), (max(1, flat.numel() // 50),), generator=g)] = \
            float("nan")
        flat[torch.randint(0, flat.numel(), (max(1, flat.numel() // 50),), generator=g)] = -0.5
    ours = _with(monkeypatch, "numba", lambda: renderer.erode(mask, kernel))
    reference = _torch_erode(mask, kernel, monkeypatch)
    assert ours.dtype == reference.dtype == dtype
    assert torch.equal(ours, reference)


@pytest.mark.parametrize("kernel", [0, 1, 5, 19])
def test_compiled_face_mask_is_erode_of_the_face_region(astronaut, mesh, monkeypatch, kernel):
    """The eroded face region of a whole-image render (face and extension triangles, and
    uncovered pixels) straight from the fragments, against region + erode in PyTorch."""
    whole = mesh.whole_image()
    f = astronaut
    src, dst = _whole_views(f, whole, 35.0)
    frags = rasterizer.rasterize(torch.cat([src, dst]), whole.triangles, CROP, CROP)
    region = (frags.mask & (frags.face_ids < whole.face_triangles))[:, None].float()
    reference = _torch_erode(region, kernel, monkeypatch)
    ours = texture_numba.face_mask(frags, whole.face_triangles, kernel, torch.float32)
    assert torch.equal(ours, reference)
    assert 0 < reference.sum() < region.sum() or kernel <= 1
    with_renderer = _with(monkeypatch, "numba", lambda: renderer._face_region(
        frags, whole, torch.float32, kernel))
    assert torch.equal(with_renderer, reference)


@pytest.mark.parametrize("shape", [(8, 3, 64, 64), (2, 3, 37, 53), (1, 1, 1, 1), (0, 3, 4, 4)])
def test_compiled_composite_is_torch_lerp(shape, monkeypatch):
    """renderer.composite on the numba path against torch.lerp: masks of 0 and 1 (all the
    renderer passes), fractional and out-of-range weights, and NaN, infinite and signed
    zero colours."""
    B, C, H, W = shape
    if texture_numba.lerp_fuses() is None:
        pytest.skip("this build's torch.lerp rounds neither way the kernel can")
    g = torch.Generator().manual_seed(H)
    image = torch.rand(shape, generator=g) * 2 - 1
    background = torch.rand(B, C, 1, 1, generator=g) * 2 - 1
    if image.numel() > 10:
        image.view(-1)[:4] = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0])
        background.view(-1)[0] = -0.0
    binary = (torch.rand(B, 1, H, W, generator=g) > 0.5).float()
    weights = torch.rand(B, 1, H, W, generator=g) * 1.4 - 0.2
    calls = []
    real = texture_numba.composite
    monkeypatch.setattr(texture_numba, "composite", lambda *a: calls.append(1) or real(*a))
    for mask in (binary, weights):
        rendered = renderer.Rendered(image, mask, mask, mask, None, mask)
        ours = _with(monkeypatch, "numba",
                     lambda r=rendered, m=mask: renderer.composite(r, m, background))
        reference = torch.lerp(background.expand_as(image), image, mask)
        assert torch.equal(ours.view(-1).view(torch.int32), reference.view(-1).view(torch.int32))
    assert len(calls) == 2  # the compiled pass ran


# ------------------------------------------------------------------------ the source view
@pytest.mark.parametrize("scope", ["face", "image"])
@pytest.mark.parametrize("strategy", ["numba", "compact"])
def test_source_view_reused_for_every_pose_equals_recomputing(faces, mesh, monkeypatch,
                                                              scope, strategy):
    args, yaw, pitch = _batch(faces)
    settings = RenderSettings(render_scope=scope, erode_kernel=3)
    photos = [a[::len(YAWS)] for a in args]  # the two photos, once each
    with monkeypatch.context() as m:
        m.setattr(rasterizer, "default_strategy", lambda device: strategy)
        source = source_view(*photos, mesh, settings)
        for y in YAWS:
            turned = torch.full((2,), y)
            cached = source.rotated_view(turned, pitch[::len(YAWS)], settings)
            fresh = rotated_view(*photos, turned, pitch[::len(YAWS)], mesh, settings)
            _assert_same(cached, fresh, f"yaw {y}")
        # one row per (photo, pose), as a pose sweep batches them
        idx = torch.arange(2).repeat_interleave(len(YAWS))
        swept = source.select(idx).rotated_view(yaw, pitch, settings)
        _assert_same(swept, rotated_view(*args, yaw, pitch, mesh, settings), "select")


def test_source_view_made_for_other_settings_is_refused(astronaut, mesh):
    source = source_view(astronaut.image, *astronaut.pose, mesh,
                         RenderSettings(render_scope="face"))
    with pytest.raises(ValueError, match="source view was made for render_scope 'face'"):
        source.rotated_view(torch.tensor([10.0]), astronaut.pitch,
                            RenderSettings(render_scope="image"))


def test_face_scope_source_view_keeps_rotate_vertices(astronaut, mesh):
    """The face scope's target view is ``rotate_vertices`` of the fit, as before."""
    source = source_view(astronaut.image, *astronaut.pose, mesh)
    view = source.rotated_view(torch.tensor([20.0]), astronaut.pitch)
    expected = rotate_vertices(*astronaut.pose, torch.tensor([20.0]), astronaut.pitch)
    assert torch.equal(view["vertices"], expected)
    assert isinstance(source.mesh, FaceMesh)
