"""`release derive`: a release and its recipe data, read from upstream."""
