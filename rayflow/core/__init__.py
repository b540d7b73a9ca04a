"""Graph building: tasks, flows, parameters and the references between them."""
