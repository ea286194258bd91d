"""Small shared helpers every layer uses: typed errors and exit codes, the grammars of values,
canonical code hashing, secrets in environments, signals and locks."""
