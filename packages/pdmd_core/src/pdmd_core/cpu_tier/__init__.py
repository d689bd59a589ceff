"""The CPU tier: small embedded benchmarks (toy1d, mog2d, digits, moving_digits) with generated or bundled data,
a text-encoder-shaped prompt encoder, conditional MLP velocity teachers and feature nets, all trainable in
minutes on two cores so that the paper's claims can be tested without a GPU or downloaded weights.
"""
