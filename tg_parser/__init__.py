"""TG_parser storage foundation: settings, schema as code and migrations of its three databases."""

__version__ = "3.1.0a1"
