"""Code that runs in a worker process: one Work (a task attempt, or a chunk of a map)."""
