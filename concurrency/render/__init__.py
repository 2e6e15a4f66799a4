"""Drawing: functions that return values (a graphviz.Digraph, an Altair chart) for notebooks
to display and tests to inspect. Nothing here is imported by the planning code."""
