"""The run for people and machines: the terminal summary, the JSON report, JUnit properties, figures."""
