"""The build host: its facts, and its check against a build before anything starts."""
