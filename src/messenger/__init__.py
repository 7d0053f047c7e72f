"""A messenger backend sharded over PostgreSQL at the application level."""

__version__ = "0.1.0"
