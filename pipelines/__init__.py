"""Pipelines: thin command-line programs that wire medinr's library pieces together."""
