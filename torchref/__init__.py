"""torchref: the PyTorch VAE of the blog post, kept as close to the blog as it can be."""
