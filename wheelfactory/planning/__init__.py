"""Release files, recipes and their contexts, adoption, and the planner that keys every step."""
