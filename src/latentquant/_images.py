"""The image format shared by every dataset and every backbone: ``(C, IMAGE_SIZE, IMAGE_SIZE)``, float in [0, 1].

A leaf module: ``latentquant.data`` renders and loads images of this size and
``latentquant.models`` builds backbones for it, and neither imports the other.
"""

IMAGE_SIZE = 64  # pixels per side, as in the paper (dSprites, Shapes3D and MPI3D are 64 x 64)
