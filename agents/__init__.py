"""Agent roles of a lab (professor, postdoc, PhD student, engineers, reviewers)."""
