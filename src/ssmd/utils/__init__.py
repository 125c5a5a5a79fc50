"""Small shared utilities (errors, registry, seeding)."""
