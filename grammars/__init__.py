"""GBNF grammars shipped with llmtk (package data: `llmtk.grammar.shipped(name)` finds them)."""
