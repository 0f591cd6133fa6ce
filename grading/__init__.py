"""Grading support for the course: notebook cell roles, timing helpers and the sealed re-check."""
