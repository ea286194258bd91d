"""What a build compiles with: the CUDA toolkit, cross builds, the build venv's installer and
requirements, the compiler cache."""
