"""Files copied into every image (run there with the standard library and the image's packages only)."""
