"""The demo: a governed content-optimisation training job, run through Agent Lightning."""
