"""learned: identity-conditioned GAN and diffusion sources trained by the project (issue 6; not built yet).

They will implement ``engine.interface.IdentitySampler`` like ``morphable.MorphableSource``.
"""
