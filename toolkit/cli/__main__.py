"""`python -m llmtk.cli`: the same as the `llmtk` command."""
from llmtk.cli.main import main

main()
