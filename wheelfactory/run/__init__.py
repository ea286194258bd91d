"""Running commands: the one subprocess runner and the progress display of what runs."""
