"""Rendering: the exact batched rasteriser, rotate-and-render of fitted faces, the
self-supervised training pairs, and CUDA-graph replay of a render.

Nothing here is a network or needs gradients: the GAN's input is rendered, not
back-propagated through. ``models/`` consumes what this package produces.
"""
