"""The image assembler: runtime Dockerfiles that only pip-install a release's locked wheels.

It turns a release and its lock into Dockerfiles, a docker-bake.hcl and per-layer build contexts,
builds the images with the Docker CLI (BuildKit), checks their shared-library closure and reports
their sizes. It knows nothing about how the wheels were built.
"""
