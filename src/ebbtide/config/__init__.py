"""The workspace: definitions as YAML files under version control."""
